"""A training run for the kill test (test_kill.py): ``python kill_worker.py METHOD OUT STEPS`` resumes from OUT's
checkpoint when there is one and checkpoints after every step."""
import os
import sys

os.environ.setdefault("PT_KFGN_BACKEND", "fast")
import numpy as np

from pt_kfgn.graph.layers import build_net
from pt_kfgn.optim import make_optimizer
from pt_kfgn.train import train

method, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = np.random.default_rng(0)
X = 1 / (1 + np.exp(-(r.standard_normal((200, 4)) @ r.standard_normal((4, 20)) * 1.5)))
net = build_net(20, 20, [8, 3], "tanh", 0, "float64", True)
kw = {"max_iters": 5} if method == "hf" else {}
opt = make_optimizer(method, net, "bce", seed=0, **kw)
train(opt, X, X, steps, batch_size=50, seed=1, out_dir=out, eval_every=2, checkpoint_every=1, resume=True,
      progress=False)
np.savez(os.path.join(out, "final.npz"), *[v for pair in net.get_params() for v in pair])
