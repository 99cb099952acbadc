"""Optimizers as graph ops, with PyTorch's defaults and update rules, and learning
rate schedules driven by the step count.

An optimizer declares its per-parameter state slots and emits the update as IR.
Everything it needs per step (bias corrections, the first-step momentum rule) is
also graph ops on two inputs: the step counter and the learning rate. So the
compiled step needs nothing from Python, and a C program can run it alone."""
import math

import numpy as np

FLOAT, DOUBLE = 1, 11              # ONNX Cast's element types


class Optimizer:
    slots = ()                     # per-parameter state, e.g. ("exp_avg", "exp_avg_sq")

    def __init__(self, lr, weight_decay=0.0):
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        self.lr, self.weight_decay = lr, weight_decay

    def initial_state(self, slot, param):
        return np.zeros(np.shape(param), np.float32)     # calloc'd: no pages touched until a step writes them

    def scalars(self, g, step, t, lr):
        """Per-step values as graph ops: step is the int64 counter (from 0), t the
        same as float32, lr the learning-rate input. Returns name -> value name."""
        return {"lr": lr}

    def update(self, g, p, grad, state, s):
        """Emit the update. p, grad: value names; state: slot -> value name; s: the
        scalars. Returns (new p, {slot: new state})."""
        raise NotImplementedError

    def _decayed(self, g, p, grad):
        return g.add(grad, g.scale(p, self.weight_decay)) if self.weight_decay else grad


class SGD(Optimizer):
    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov
        self.slots = ("momentum_buffer",) if momentum else ()

    def scalars(self, g, step, t, lr):
        first = g.op("Equal", [step, g.scalar(0, step)])   # torch starts the buffer at the gradient
        pick = lambda a, b: g.where(first, g.scalar(a, t), g.scalar(b, t))
        return {"lr": lr, "keep": pick(0.0, self.momentum), "take": pick(1.0, 1.0 - self.dampening)}

    def update(self, g, p, grad, state, s):
        grad = self._decayed(g, p, grad)
        new_state = {}
        if self.momentum:
            buf = g.add(g.mul(state["momentum_buffer"], s["keep"]), g.mul(grad, s["take"]))
            new_state["momentum_buffer"] = buf
            grad = g.add(grad, g.scale(buf, self.momentum)) if self.nesterov else buf
        return g.sub(p, g.mul(grad, s["lr"])), new_state


class Adam(Optimizer):
    slots = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.betas, self.eps = tuple(betas), eps

    def scalars(self, g, step, t, lr):
        """The bias corrections 1 - beta**(t+1) in float64: in float32, 1 - 0.999**1
        keeps only three or four digits, and every update inherits the error."""
        b1, b2 = self.betas
        count = g.op("Cast", [g.add(step, g.scalar(1, step))], to=DOUBLE)
        one = g.scalar(1.0, count)

        def correction(b):             # 1 - b**count, as 1 - exp(count * log b)
            return g.sub(one, g.op("Exp", [g.scale(count, math.log(b))])) if b > 0 else one
        inv_bc1 = g.op("Cast", [g.div(one, correction(b1))], to=FLOAT)
        inv_bc2_sqrt = g.op("Cast", [g.div(one, g.op("Sqrt", [correction(b2)]))], to=FLOAT)
        return {"lr": lr, "step_size": g.mul(lr, inv_bc1), "inv_bc2_sqrt": inv_bc2_sqrt,
                "decay": g.sub(g.scalar(1.0, t), g.scale(lr, self.weight_decay))}

    def update(self, g, p, grad, state, s):
        b1, b2 = self.betas
        if self.decoupled:
            p = g.mul(p, s["decay"]) if self.weight_decay else p
        else:
            grad = self._decayed(g, p, grad)
        m = g.add(g.scale(state["exp_avg"], b1), g.scale(grad, 1 - b1))
        v = g.add(g.scale(state["exp_avg_sq"], b2), g.scale(g.mul(grad, grad), 1 - b2))
        denom = g.add(g.mul(g.op("Sqrt", [v]), s["inv_bc2_sqrt"]), g.scalar(self.eps, v))
        return g.sub(p, g.mul(g.div(m, denom), s["step_size"])), {"exp_avg": m, "exp_avg_sq": v}


class AdamW(Adam):
    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(lr, betas, eps, weight_decay)


class Adagrad(Optimizer):
    slots = ("sum",)

    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(lr, weight_decay)
        self.lr_decay, self.initial, self.eps = lr_decay, initial_accumulator_value, eps

    def initial_state(self, slot, param):
        return np.full_like(param, self.initial)

    def scalars(self, g, step, t, lr):
        return {"lr": g.div(lr, g.add(g.scalar(1.0, t), g.scale(t, self.lr_decay)))}

    def update(self, g, p, grad, state, s):
        grad = self._decayed(g, p, grad)
        total = g.add(state["sum"], g.mul(grad, grad))
        denom = g.add(g.op("Sqrt", [total]), g.scalar(self.eps, total))
        return g.sub(p, g.mul(g.div(grad, denom), s["lr"])), {"sum": total}


class RMSprop(Optimizer):
    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(lr, weight_decay)
        self.alpha, self.eps, self.momentum, self.centered = alpha, eps, momentum, centered
        self.slots = ("square_avg",) + (("momentum_buffer",) if momentum else ()) + \
            (("grad_avg",) if centered else ())

    def update(self, g, p, grad, state, s):
        a = self.alpha
        grad = self._decayed(g, p, grad)
        sq = g.add(g.scale(state["square_avg"], a), g.scale(g.mul(grad, grad), 1 - a))
        new = {"square_avg": sq}
        var = sq
        if self.centered:
            ga = g.add(g.scale(state["grad_avg"], a), g.scale(grad, 1 - a))
            new["grad_avg"] = ga
            var = g.sub(sq, g.mul(ga, ga))
        avg = g.add(g.op("Sqrt", [var]), g.scalar(self.eps, var))
        step = g.div(grad, avg)
        if self.momentum:
            step = g.add(g.scale(state["momentum_buffer"], self.momentum), step)
            new["momentum_buffer"] = step
        return g.sub(p, g.mul(step, s["lr"])), new


# ---- learning-rate schedules (functions of the 0-based step count) -------------------

class Schedule:
    def __call__(self, step, base_lr):
        raise NotImplementedError


class StepSchedule(Schedule):
    def __init__(self, step_size, gamma=0.1):
        self.step_size, self.gamma = step_size, gamma

    def __call__(self, step, base_lr):
        return base_lr * self.gamma ** (step // self.step_size)


class ExponentialSchedule(Schedule):
    def __init__(self, gamma):
        self.gamma = gamma

    def __call__(self, step, base_lr):
        return base_lr * self.gamma ** step


class CosineSchedule(Schedule):
    """Cosine annealing from the base rate to `min_lr` over `total_steps`."""

    def __init__(self, total_steps, min_lr=0.0):
        self.total, self.min_lr = max(1, total_steps), min_lr

    def __call__(self, step, base_lr):
        t = min(step, self.total) / self.total
        return self.min_lr + (base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))


class LinearWarmup(Schedule):
    """Linear ramp over `warmup_steps`, then `after` (or the base rate)."""

    def __init__(self, warmup_steps, after=None):
        self.warmup, self.after = max(1, warmup_steps), after

    def __call__(self, step, base_lr):
        if step < self.warmup:
            return base_lr * (step + 1) / self.warmup
        return self.after(step - self.warmup, base_lr) if self.after else base_lr
