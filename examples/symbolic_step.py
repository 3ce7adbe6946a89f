"""The KFRA step inside your own ``pytensor.function``, Lasagne style, with your own damping rule.

    python examples/symbolic_step.py

``pk.kfgn_updates`` returns the update dictionary of one damped Kronecker-factored Gauss-Newton step and the
symbolic loss, α*, model change and status.  λ and γ can be shared variables, so the host loop below adapts λ
with the Levenberg-Marquardt rule of Appendix B (eq. 42) from the loss before and after each step.
(``pk.KFGN`` does all of this for you, with γ's search, retries and rollback.)
"""

import numpy as np
import pytensor
import pytensor.tensor as pt

import pt_kfgn as pk


def main(steps=30, n=512, seed=0, mode=None):
    net = pk.mlp([10, 16, 3], ["tanh", "identity"], seed=seed, dtype="float64")
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, 10))
    Y = np.eye(3)[np.argmax(X[:, :3] + 0.1 * r.standard_normal((n, 3)), axis=1)]

    y = pt.matrix("y", dtype="float64")
    lam = pytensor.shared(np.float64(1.0), name="lam")
    updates, info = pk.kfgn_updates(net.output, y, "softmax_ce", "kfra", lam=lam, gamma=lam, eta=1e-5)
    step = pytensor.function([net.X, y], [info["loss"], info["model_change"], info["status"]], updates=updates,
                           mode=mode)
    loss = pytensor.function([net.X, y], info["loss"], mode=mode)

    omega1 = (19 / 20) ** 5
    for t in range(steps):
        f0, dM, status = step(X, Y)
        f1 = loss(X, Y)
        rho = (f1 - f0) / dM if status == 0 else -np.inf  # eq. 42 (the weight decay is left out here)
        lam.set_value(lam.get_value() * omega1 if rho > 0.75 else lam.get_value() / omega1 if rho < 0.25
                      else lam.get_value())
        if t % 10 == 0 or t == steps - 1:
            print(f"step {t:3d}: loss {f1:.4f}, rho {rho:.2f}, lambda {float(lam.get_value()):.3g}")
    return float(loss(X, Y))


if __name__ == "__main__":
    main()
