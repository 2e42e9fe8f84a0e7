r"""Networks. ``nn.Module`` lives here and only where parameters live.

:class:`StepNets` holds the ``S`` per-time-step subnetworks of the deep BSDE method as stacked weight
tensors and evaluates all of them in one batched matrix product per layer (``torch.bmm``), instead of a
Python loop over ``S`` small networks. The forward paths do not depend on the networks, so every
:math:`Z_n = \mathcal N_n(X_n)` can be computed at once.

Architecture (Han, Jentzen & E, PNAS 2018, as in their code): per network
``BN -> (Linear -> BN -> ReLU) x L -> Linear -> BN``, hidden linear layers without bias, batch
normalisation with momentum 0.01 (Keras' 0.99), ε = 1e-6, β ~ N(0, 0.1²), γ ~ U(0.1, 0.5), Glorot-uniform
weights. Without batch normalisation: ``(Linear+bias -> ReLU) x L -> Linear+bias``.

:class:`TimeNet` is the alternative for the deep BSDE method: one network of ``(t, x)`` shared by all time
steps (the "merged" network of Chan-Wah-Ng et al., J. Sci. Comput. 2019; Raissi 2018 also uses one network
over ``(t, x)``). It sees ``S`` times as many samples per parameter as ``S`` separate networks.

:class:`MLP` is a plain fully connected network ``u(t, x)`` for the PINN method.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["StepNets", "TimeNet", "MLP"]


def _glorot(shape: tuple[int, ...], fan_in: int, fan_out: int, gen: torch.Generator) -> torch.Tensor:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * limit


class StepNets(nn.Module):
    """``num_nets`` independent MLPs evaluated together: ``(B, S, d_in) -> (B, S, d_out)``.

    Parameters are created on the CPU from ``generator`` in float64 and can be moved with ``.to()``,
    so one seed gives one initialisation on every device and dtype.
    """

    def __init__(self, num_nets: int, d_in: int, hidden: Sequence[int], d_out: int, *,
                 batch_norm: bool = True, generator: torch.Generator, momentum: float = 0.01,
                 eps: float = 1e-6) -> None:
        super().__init__()
        self.num_nets, self.batch_norm, self.momentum, self.eps = num_nets, batch_norm, momentum, eps
        widths = [d_in, *hidden, d_out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            self.weights.append(nn.Parameter(_glorot((num_nets, a, b), a, b, generator)))
            last = k == len(widths) - 2
            if last or not batch_norm:
                self.biases.append(nn.Parameter(torch.zeros(num_nets, 1, b, dtype=torch.float64)))
        if batch_norm:
            bn_widths = [d_in, *hidden, d_out]
            # batch-norm parameters and statistics are flat (S*C,), matching the (B, S*C) view
            self.gammas = nn.ParameterList(
                nn.Parameter(0.1 + 0.4 * torch.rand(num_nets * w, generator=generator, dtype=torch.float64))
                for w in bn_widths)
            self.betas = nn.ParameterList(
                nn.Parameter(0.1 * torch.randn(num_nets * w, generator=generator, dtype=torch.float64))
                for w in bn_widths)
            for k, w in enumerate(bn_widths):
                self.register_buffer(f"running_mean{k}", torch.zeros(num_nets * w, dtype=torch.float64))
                self.register_buffer(f"running_var{k}", torch.ones(num_nets * w, dtype=torch.float64))

    def _bn(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Batch normalisation of ``h`` ``(B, S, C)`` over the batch, separately for each (net, feature):
        one fused ``F.batch_norm`` call on the ``(B, S*C)`` view."""
        batch, nets, width = h.shape
        out = F.batch_norm(h.reshape(batch, nets * width), getattr(self, f"running_mean{k}"),
                           getattr(self, f"running_var{k}"), self.gammas[k], self.betas[k],
                           self.training, self.momentum, self.eps)
        return out.view(batch, nets, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, S, d_in)`` (batch first, net second) -> ``(B, S, d_out)``."""
        layers = len(self.weights)
        h = self._bn(0, x) if self.batch_norm else x
        for k in range(layers):
            last = k == layers - 1
            hs = h.transpose(0, 1)  # (S, B, C): a strided view, no copy
            if last or not self.batch_norm:
                hs = torch.baddbmm(self.biases[-1 if self.batch_norm else k], hs, self.weights[k])
            else:
                hs = torch.bmm(hs, self.weights[k])
            h = hs.transpose(0, 1)
            if self.batch_norm:
                h = self._bn(k + 1, h)
            if not last:
                h = torch.relu(h)
        return h


#: widths up to this one get output scale 1; wider ones 1/width relative to it (see TimeNet)
MEAN_FIELD_WIDTH = 128


def _out_scale(width: int) -> float:
    """``min(1, MEAN_FIELD_WIDTH / width)``: the output of a wide network moves per Adam step no more than that of
    a network of width :data:`MEAN_FIELD_WIDTH` (mean-field scaling beyond it)."""
    return min(1.0, MEAN_FIELD_WIDTH / width)


class TimeNet(nn.Module):
    r"""One network for all time steps: ``(B, S, d) -> (B, S, d_out)``, evaluating
    :math:`\mathcal N(t_s / T, (x - m) / s)` at the fixed times ``times`` ``(S,)``.

    ``(Linear -> tanh) x L -> Linear``, Glorot-uniform weights, zero biases, and a zero last layer: training
    starts from :math:`Z \equiv 0`. (With Glorot output weights the initial :math:`|Z|` is of order 1 in
    every coordinate; for drivers that grow with :math:`|z|` such as HJB's :math:`-\tfrac{\lambda}{2}|z|^2`
    the first steps then blow :math:`Y` up, and on HJB at d = 100, λ = 20 the run ended 7 % off against
    2.5 % from a zero start.) The input shift ``m`` and
    scale ``s`` (one per coordinate) are fixed buffers, not trained: the mean and standard deviation of
    sample paths over all batch entries and times, given at construction (a coordinate with zero spread
    gets scale 1). They play the part of the step networks' input batch normalisation.
    """

    def __init__(self, times: torch.Tensor, horizon: float, shift: torch.Tensor, scale: torch.Tensor,
                 hidden: Sequence[int], d_out: int, *, generator: torch.Generator, linear: bool = False) -> None:
        super().__init__()
        d_in = shift.shape[0]
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        self.horizon = float(horizon)
        self.register_buffer("times", (times / horizon).to(torch.float64).reshape(1, -1, 1))
        self.register_buffer("shift", shift.to(torch.float64))
        self.register_buffer("scale", scale.to(torch.float64))
        self.net = MLP(d_in + 1, hidden, d_out, generator=generator, activation="tanh")
        with torch.no_grad():
            self.net.net[-1].weight.zero_()
        # an Adam step moves every output weight by about the learning rate, all in the same direction at first,
        # so the output moves by about lr x width x E|h| per step: at width 512 (d = 1000) four times more than
        # at width 110 (d = 100), and the heat equation at d = 1000 then did not converge (terminal mismatch
        # 25 times Var g after 1200 steps). Beyond MEAN_FIELD_WIDTH the output is scaled by 1/width
        # (mean-field); below it, not (with 1/width at d = 100 the HJB run explained 6 % of Var g after 1000
        # steps instead of 39 %).
        self.out_scale = _out_scale(hidden[-1] if hidden else d_in + 1)
        #: ``linear=True``: a linear map of the same standardised ``(t, x)`` added to the output, starting at zero
        #: (the deep BSDE method's region mode, where Z varies across the starting points: for the heat equation
        #: on [-1, 1]^100 the trained Z explained 35 % of the terminal variance after 1000 steps without it, 93 %
        #: with it). Unscaled: scaled by 1/sqrt(d + 1) it learnt too slowly (grad u 6.8 % off against 3.3 %).
        #: the linear part's output is scaled by ``min(1, MEAN_FIELD_WIDTH / (d_in + 1))``: Adam moves each of its
        #: ``d_in + 1`` weights per output by about the learning rate, so unscaled its output moves d_in times
        #: that per step; at d = 1000 (heat, σ = 0.5, x0 = 1) the terminal mismatch then grew from Var g to 100
        #: times it in 1200 steps; scaled, it stays at Var g after 300 steps (1.2 Var g, against 3.7 with the
        #: square root of this factor). d <= 127 is unchanged.
        self.linear_scale = _out_scale(d_in + 1)
        self.linear: nn.Linear | None = None
        if linear:
            self.linear = nn.Linear(d_in + 1, d_out, dtype=torch.float64)
            with torch.no_grad():
                self.linear.weight.zero_()
                self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, S, d)`` at the ``S`` construction times -> ``(B, S, d_out)``."""
        steps = x.shape[1]
        if steps != self.times.shape[1]:
            raise ValueError(f"TimeNet: built for {self.times.shape[1]} times, received paths with {steps}")
        return self._evaluate(self.times.reshape(-1).to(x.dtype), x)

    def at(self, times: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, S, d)`` at any times ``times`` ``(S,)`` (in the units of the horizon) -> ``(B, S, d_out)``:
        the shared network is a function of ``(t, x)``, so it can be evaluated off the training grid (the
        error bar's finer grid does)."""
        return self._evaluate(times.to(x.dtype).reshape(-1) / self.horizon, x)

    def _evaluate(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathcal N(t_s, (x - m) / s)` with the time column, the input normalisation and the output scale
        folded into the first and last layers' weights: the first layer is
        :math:`W_x ((x - m)/s) + w_t t + b = (W_x / s)\,x + (b - (W_x/s)\,m + w_t t)`, one matrix product over all
        ``B x S`` rows plus a bias per time, instead of a normalised copy of ``x`` concatenated with ``t`` (two
        more passes over the largest tensor of the step, 15 % of the error bar's time at d = 100)."""
        layers = self.net.net
        first, last = layers[0], layers[-1]
        w_x = first.weight[:, 1:] / self.scale.to(x.dtype)
        bias = (first.bias - w_x @ self.shift.to(x.dtype)) + t.reshape(-1, 1) * first.weight[:, 0]  # (S, width)
        # without a graph (the error bar's checks), in place: fewer (B, S, width) temporaries, the same numbers,
        # 16 % less time at the error bar's shapes. With a graph, not: the products' outputs are views, and
        # autograd then records in-place ops on them as copies into slices (the backward took 25 % longer)
        inplace = not torch.is_grad_enabled()
        h = F.linear(x, w_x)
        h = h.add_(bias) if inplace else h + bias
        if len(layers) == 1:  # no hidden layer: the first layer is the last
            out = h * self.out_scale
        else:
            for layer in list(layers)[1:-1]:
                h = h.tanh_() if inplace and isinstance(layer, nn.Tanh) else layer(h)
            out = F.linear(h, last.weight * self.out_scale, last.bias * self.out_scale)
        if self.linear is not None:
            lin = self.linear
            s = self.linear_scale  # folded into the weights, as the output scale is: exact where it is 1
            l_x = lin.weight[:, 1:] * s / self.scale.to(x.dtype)
            l_bias = (lin.bias * s - l_x @ self.shift.to(x.dtype)) + t.reshape(-1, 1) * (lin.weight[:, 0] * s)
            out = out.add_(F.linear(x, l_x)).add_(l_bias) if inplace else out + F.linear(x, l_x) + l_bias
        return out


class MLP(nn.Module):
    """A fully connected network ``(batch, d_in) -> (batch, d_out)`` with ``tanh`` (or another)
    activation, Glorot-uniform weights from ``generator``."""

    def __init__(self, d_in: int, hidden: Sequence[int], d_out: int = 1, *, generator: torch.Generator,
                 activation: str = "tanh") -> None:
        super().__init__()
        acts = {"tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU, "softplus": nn.Softplus}
        if activation not in acts:
            raise ValueError(f"activation: expected one of {sorted(acts)}, received {activation!r}")
        widths = [d_in, *hidden, d_out]
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            lin = nn.Linear(a, b, dtype=torch.float64)
            with torch.no_grad():
                lin.weight.copy_(_glorot((b, a), a, b, generator))
                lin.bias.zero_()
            layers.append(lin)
            if k < len(widths) - 2:
                layers.append(acts[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
