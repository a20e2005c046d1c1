# benchmarks/peers/torch_peer.py — the PyTorch peer used for side-by-side speed figures.
#
# A vendored copy of the project's PyTorch peer, run only by the benchmarks (benchmarks/train_step.py,
# benchmarks/embed.py) in a separate interpreter, so that cmir_tf's figures are printed beside those of
# the same model in PyTorch on the same machine. It is NOT a dependency of cmir_tf (the package never
# imports torch) and NOT a reference implementation: like cmir_tf it is written from the paper's text,
# not from the published PyTorch code (andrebola/contrastive-mir-learning); docs/FIDELITY.md lists where
# the two differ. It needs torch in the interpreter that runs it, e.g.
#     python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch==2.13.0 numpy
# and then `--peer-python /tmp/torch/bin/python` (or CMIR_PEER_PYTHON=/tmp/torch/bin/python).
# Only change from the project's copy: this header, and the docstring's pointer to the paper's text.
"""PyTorch peer of the paper's model, for side-by-side speed comparisons on the same machine.

Written from the paper's text (section 2): audio CNN (Z=7 blocks, K=3, BN, ReLU,
max-pool) + feed-forward block, genre encoder (multi-head self-attention over word vectors, FF with
skip, masked sum, LN), CF encoder (FF-ReLU-DP-FF-LN), three symmetric NT-Xent losses (tau=0.1).

    python torch_peer.py train [--steps 5] [--batch 128]   # training examples/s (forward+backward+Adam)
    python torch_peer.py infer [--patches 1024] [--batch 64]  # audio-encoder inference patches/s
    add --tuned for the peer a PyTorch expert would run on CPU: channels_last convolutions
    (measured 1.26x train / 1.47x infer over the default here); add --bf16 for bfloat16 autocast
    of the forward pass (the peer of a mixed_bfloat16 run)

Needs torch (CPU build is enough). Prints one line: 'peer <mode> ... <unit>=<value>'.
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

T, NB, D, FW, TW, FCF = 256, 48, 128, 200, 10, 300


def block(cin, cout, pool):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(pool))


class Audio(nn.Module):
    def __init__(self):
        super().__init__()
        spec = [(1, 128, 2), (128, 128, 2), (128, 256, 2), (256, 256, 2), (256, 256, (2, 1)), (256, 256, (2, 1)), (256, 512, 2)]
        self.cnn = nn.Sequential(nn.BatchNorm2d(1), *[block(a, b, p) for a, b, p in spec])
        self.ffb = nn.Sequential(nn.Flatten(), nn.Linear(1024, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(0.5),
                                 nn.Linear(512, D), nn.LayerNorm(D))

    def forward(self, x):  # (B, T, NB)
        return self.ffb(self.cnn(x.unsqueeze(1)))


class Genre(nn.Module):
    def __init__(self):
        super().__init__()
        self.att = nn.MultiheadAttention(FW, 4, batch_first=True)
        self.ff, self.dp, self.proj, self.ln = nn.Linear(FW, FW), nn.Dropout(0.5), nn.Linear(FW, D), nn.LayerNorm(D)

    def forward(self, w, mask):
        v, _ = self.att(w, w, w, key_padding_mask=~mask)
        v = v + self.dp(self.ff(v))
        return self.ln(self.proj((v * mask.unsqueeze(-1)).sum(1)))


class CF(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(FCF, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, D), nn.LayerNorm(D))

    def forward(self, x):
        return self.net(x)


def nt_xent(a, b, tau=0.1):
    z = F.normalize(torch.cat([a, b]), dim=1)
    s = z @ z.t() / tau
    s.fill_diagonal_(float("-inf"))
    n = a.shape[0]
    return F.cross_entropy(s, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]))


def train(steps, batch, tuned=False, bf16=False):
    ea, eg, ec = Audio(), Genre(), CF()
    if tuned:
        ea = ea.to(memory_format=torch.channels_last)
    x, w = torch.randn(batch, T, NB), torch.randn(batch, TW, FW)
    mask = torch.rand(batch, TW) > 0.3
    mask[:, 0] = True
    cf = torch.rand(batch, FCF)
    opt = torch.optim.Adam([*ea.parameters(), *eg.parameters(), *ec.parameters()], lr=1e-4)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pa, pg, pc = ea(x), eg(w, mask), ec(cf)
        pa, pg, pc = pa.float(), pg.float(), pc.float()
        loss = nt_xent(pa, pg) + nt_xent(pa, pc) + nt_xent(pg, pc)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    rate = steps * batch / (time.perf_counter() - t0)
    print(f"peer train torch={torch.__version__} threads={torch.get_num_threads()} batch={batch} tuned={tuned} bf16={bf16} examples_per_s={rate:.2f}")


@torch.no_grad()
def infer(patches, batch, tuned=False, bf16=False):
    ea = Audio().eval()
    if tuned:
        ea = ea.to(memory_format=torch.channels_last)
    x = torch.randn(patches, T, NB)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        ea(x[:batch])
        t0 = time.perf_counter()
        for i in range(0, patches, batch):
            ea(x[i:i + batch])
    rate = patches / (time.perf_counter() - t0)
    print(f"peer infer torch={torch.__version__} threads={torch.get_num_threads()} batch={batch} tuned={tuned} bf16={bf16} patches_per_s={rate:.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["train", "infer"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--patches", type=int, default=1024)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--tuned", action="store_true", help="channels_last convolutions")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast of the forward pass")
    a = p.parse_args()
    if a.mode == "train":
        train(a.steps, a.batch or 128, a.tuned, a.bf16)
    else:
        infer(a.patches, a.batch or 64, a.tuned, a.bf16)
