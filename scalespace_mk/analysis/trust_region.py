"""The trust-region rule shared by the censuses' Newton ascents.

Both the 8-type census (:func:`scalespace_mk.analysis.scale_search._refine_sep`) and the
family census (:class:`scalespace_mk.analysis.jets_search.Search`) maximise R^2 over the
scales of all filters at once by proposing a step within a per-filter radius ``r`` and
evaluating the objective there. :func:`accept` is what happens next, in one place: a
proposal that does not lower the objective is taken (with its value, gradient and Hessian),
and the radius doubles when the step had been cut to it; otherwise the filter stays and the
radius shrinks by 4.
"""

from __future__ import annotations

import torch

__all__: list[str] = []


def accept(
    prop: torch.Tensor,
    cur: torch.Tensor,
    new: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    old: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    r: torch.Tensor,
    limited: torch.Tensor,
) -> tuple[
    torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor
]:
    """Take or refuse the proposals ``prop`` [n, d] from ``cur`` [n, d].

    ``new`` and ``old`` are ``(f [n], gradient [n, d], Hessian [n, d, d])`` at ``prop`` and at
    ``cur``; ``r`` [n] the trust radii, ``limited`` [n] whether each step was cut to its
    radius. Returns the points, their ``(f, gradient, Hessian)``, the new radii and which
    proposals were taken ([n] bool).
    """
    acc = new[0] >= old[0]
    cur = torch.where(acc[:, None], prop, cur)
    vals = (
        torch.where(acc, new[0], old[0]),
        torch.where(acc[:, None], new[1], old[1]),
        torch.where(acc[:, None, None], new[2], old[2]),
    )
    r = torch.where(acc, torch.where(limited, 2.0 * r, r), r / 4.0)
    return cur, vals, r, acc
