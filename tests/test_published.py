"""``--variant published`` (cmir_tf.model.published): each published module equals its PyTorch original.

The PyTorch side below is the published code's module definitions (GitHub
``andrebola/contrastive-mir-learning``: ``models.py`` ``TagSelfAttentionEncoder``, ``CFEncoder``,
``Multiobjective``; ``utils.py`` ``contrastive_loss``; ``trainer_baselines.py``'s BCE / MSE;
``torch.optim.Adam(weight_decay=1e-4)``), written here from their description. It runs under the PyTorch
interpreter named by ``CMIR_TEST_TORCH_PYTHON`` (``tests/torch_side.py``), in one subprocess for the
whole module; random weights are made here, ported into the Keras layers (Dense kernel = Linear weight
transposed) and the outputs compared in float32 to 1e-5.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf
from torch_side import requires_torch, run_torch

from cmir_tf.model import losses
from cmir_tf.model.contrastive import ContrastiveModel
from cmir_tf.model.published import CoupledL2Adam, PublishedCFEncoder, PublishedGenreEncoder, published_view

V, T, B = 20, 10, 6  # genres, genre slots, songs
N_GENRES = [1, 3, 10, 7, 2, 5]  # per song: one alone, a full list, and in between
ATOL = 1e-5

TORCH_CODE = """
import torch.nn.functional as F

class TagSelfAttention(nn.Module):  # models.TagSelfAttentionEncoder: no residual, no feed-forward
    def __init__(self, table, n_head, d_model, d_k):
        super().__init__()
        self.embeddings = nn.Embedding.from_pretrained(table, freeze=False)
        self.n_head, self.d_k = n_head, d_k
        self.w_qs = nn.Linear(d_model, n_head * d_k, bias=False)
        self.w_ks = nn.Linear(d_model, n_head * d_k, bias=False)
        self.w_vs = nn.Linear(d_model, n_head * d_k, bias=False)
        self.fc = nn.Linear(n_head * d_k, d_model, bias=False)
        self.attn_dropout = nn.Dropout(0.1)
        self.dropout = nn.Dropout(0.1)
        self.layer_norm = nn.LayerNorm(d_model, eps=1e-6)

    def forward(self, tags, mask):
        x = self.embeddings(tags)
        b, t = x.shape[:2]
        split = lambda y: y.view(b, t, self.n_head, self.d_k).transpose(1, 2)
        q, k, v = split(self.w_qs(x)), split(self.w_ks(x)), split(self.w_vs(x))
        scores = torch.matmul(q / self.d_k ** 0.5, k.transpose(2, 3))
        scores = scores.masked_fill(mask.unsqueeze(1) == 0, -1e9)  # trainer.py: mask = tags.unsqueeze(1)
        out = torch.matmul(self.attn_dropout(F.softmax(scores, dim=-1)), v)
        out = self.dropout(self.fc(out.transpose(1, 2).contiguous().view(b, t, -1)))
        return self.layer_norm(out.sum(1))  # every query position

def linear(weight, bias=None):
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer

def layer_norm(gamma, beta):
    ln = nn.LayerNorm(gamma.shape[0], eps=1e-6)
    with torch.no_grad():
        ln.weight.copy_(gamma); ln.bias.copy_(beta)
    return ln

def contrastive_loss(za, zb, t):  # utils.contrastive_loss
    z = torch.cat((za, zb), dim=0)
    norms = torch.norm(z, p=2, dim=1)
    s = torch.exp(torch.matmul(z, z.t()) / (norms.unsqueeze(0) * norms.unsqueeze(1)) / t)
    s = s * (1 - torch.eye(len(s)))
    n = len(s) // 2
    num = torch.cat((s[:n, n:].diag(), s[n:, :n].diag()), dim=0)
    return torch.log(num / s.sum(dim=-1) + 1e-5).neg().mean()

genre = TagSelfAttention(IN["table"], 4, 128, 128).eval()
with torch.no_grad():
    for name in ("w_qs", "w_ks", "w_vs", "fc"):
        getattr(genre, name).weight.copy_(IN[name])
    genre.layer_norm.weight.copy_(IN["g_gamma"]); genre.layer_norm.bias.copy_(IN["g_beta"])
OUT["genre"] = genre(IN["tags"], IN["tags"].unsqueeze(1))

cf = nn.Sequential(linear(IN["cf_w1"], IN["cf_b1"]), nn.ReLU(), nn.Dropout(0.3), linear(IN["cf_w2"], IN["cf_b2"]),
                   layer_norm(IN["cf_gamma"], IN["cf_beta"])).eval()  # models.CFEncoder(301, 128)
OUT["cf"] = cf(IN["cf_in"])

for i, t in enumerate((0.1, 0.02)):
    OUT[f"loss{i}"] = contrastive_loss(IN[f"za{i}"], IN[f"zb{i}"], t)

out_cf, out_genre = linear(IN["head_cf_w"], IN["head_cf_b"]), linear(IN["head_g_w"], IN["head_g_b"])
OUT["cf_pred"], OUT["genre_logits"] = out_cf(IN["audio"]), out_genre(IN["audio"])  # models.Multiobjective
OUT["bce"] = nn.BCEWithLogitsLoss()(OUT["genre_logits"], IN["multi_hot"])  # trainer_baselines.py
OUT["mse"] = nn.MSELoss()(OUT["cf_pred"], IN["cf_target"])

param = nn.Parameter(IN["w0"].clone())
adam = torch.optim.Adam([param], lr=1e-3, weight_decay=1e-4, eps=1e-8)  # trainer*.py, lr raised to see steps
steps = []
for g in IN["grads"]:
    param.grad = g.clone()
    adam.step()
    steps.append(param.detach().clone())
OUT["adam"] = torch.stack(steps)

OUT["view"] = IN["crop"].view(-1, 1, 48, 256)[:, 0]  # trainer.py: data.view(-1, 1, 48, 256)
"""


def _genres(rng):
    """cmir_tf's (B, T) indices + mask, and the published tag tensor: genre + 1, 0 for padding."""
    genres = np.zeros((B, T), np.int32)
    mask = np.zeros((B, T), bool)
    for i, n in enumerate(N_GENRES):
        genres[i, :n] = rng.choice(V, n, replace=False)  # genre 0 is a real genre in cmir_tf
        mask[i, :n] = True
    return genres, mask, np.where(mask, genres + 1, 0).astype(np.int64)


def _arrays():
    rng = np.random.default_rng(20)
    f32 = lambda *shape, scale=0.1: (rng.standard_normal(shape) * scale).astype(np.float32)  # noqa: E731
    genres, mask, tags = _genres(rng)
    a = dict(table=f32(V + 1, 128, scale=1.0), w_qs=f32(512, 128), w_ks=f32(512, 128), w_vs=f32(512, 128),
             fc=f32(128, 512), g_gamma=1 + f32(128), g_beta=f32(128), tags=tags,
             cf_w1=f32(128, 301), cf_b1=f32(128), cf_w2=f32(128, 128), cf_b2=f32(128), cf_gamma=1 + f32(128),
             cf_beta=f32(128), cf_in=f32(B, 301, scale=1.0),
             za0=f32(16, 32, scale=1.0), zb0=f32(16, 32, scale=1.0),
             audio=f32(B, 128, scale=1.0), head_cf_w=f32(301, 128), head_cf_b=f32(301), head_g_w=f32(V, 128),
             head_g_b=f32(V), cf_target=f32(B, 301, scale=1.0),
             multi_hot=np.stack([np.isin(np.arange(V), genres[i][mask[i]]) for i in range(B)]).astype(np.float32),
             w0=(1 + rng.standard_normal(7)).astype(np.float64), grads=(rng.standard_normal((4, 7)) * 1e-6),
             crop=f32(3, 256, 48, scale=10.0))
    # τ = 0.02 with some positives pointing away: probabilities near 1e-5, where the +1e-5 matters
    a["za1"] = a["za0"]
    a["zb1"] = (a["zb0"] * np.where(np.arange(16) % 3 == 0, -1, 1)[:, None] - a["za0"] * 0.5).astype(np.float32)
    return a, genres, mask


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(inputs, cmir_tf's genre indices, mask, the PyTorch outputs): one PyTorch run for the module."""
    arrays, genres, mask = _arrays()
    return arrays, genres, mask, run_torch(TORCH_CODE, arrays, tmp_path_factory.mktemp("torch"))


def _close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=0, atol=ATOL)


@requires_torch
def test_genre_encoder_equals_the_published_self_attention(reference):
    a, genres, mask, out = reference
    layer = PublishedGenreEncoder(a["table"][1:], num_heads=4, embed_dim=128)
    layer.build((None, T), (None, T))
    layer.word2vec.assign(a["table"])  # row 0 is the padding row, trained in the published code too
    for keras_dense, name in ((layer.w_q, "w_qs"), (layer.w_k, "w_ks"), (layer.w_v, "w_vs"), (layer.fc, "fc")):
        keras_dense.kernel.assign(a[name].T)
    layer.ln.gamma.assign(a["g_gamma"])
    layer.ln.beta.assign(a["g_beta"])
    got = layer(tf.constant(genres), tf.constant(mask), training=False).numpy()
    _close(got, out["genre"])
    # the padded query positions count: a song of 3 genres moves with the padding row (one of 1 genre cannot:
    # its padded queries see one key only), a song of 10 genres has no padding
    layer.word2vec.assign(np.concatenate([a["table"][:1] + 1.0, a["table"][1:]]))
    moved = layer(tf.constant(genres), tf.constant(mask), training=False).numpy()
    assert np.abs(moved[1] - got[1]).max() > 1e-2 and np.abs(moved[2] - got[2]).max() < ATOL


@requires_torch
def test_cf_encoder_equals_the_published_one(reference):
    a, _, _, out = reference
    layer = PublishedCFEncoder(128)
    layer.build((None, 301))
    layer.fc1.kernel.assign(a["cf_w1"].T)
    layer.fc1.bias.assign(a["cf_b1"])
    layer.fc2.kernel.assign(a["cf_w2"].T)
    layer.fc2.bias.assign(a["cf_b2"])
    layer.ln.gamma.assign(a["cf_gamma"])
    layer.ln.beta.assign(a["cf_beta"])
    assert layer.fc1.kernel.shape == (301, 128) and layer.drop.rate == 0.3
    _close(layer(tf.constant(a["cf_in"]), training=False), out["cf"])


@requires_torch
@pytest.mark.parametrize("case, temperature", [(0, 0.1), (1, 0.02)])
def test_loss_with_log_epsilon_equals_the_published_contrastive_loss(reference, case, temperature):
    a, _, _, out = reference
    za, zb = tf.constant(a[f"za{case}"]), tf.constant(a[f"zb{case}"])
    got = losses.nt_xent(za, zb, temperature, log_epsilon=losses.PUBLISHED_LOG_EPSILON).numpy()
    _close(got, out[f"loss{case}"])
    if case == 1:  # where a positive's probability is near 1e-5 the paper's loss differs: the test can tell
        assert abs(losses.nt_xent(za, zb, temperature).numpy() - out["loss1"]) > 1e-2


@requires_torch
def test_baseline_heads_and_losses_equal_the_published_ones(reference):
    a, genres, mask, out = reference
    model = ContrastiveModel("bline_cf_g", vocab_size=V, w2v_dim=128, cf_dim=301, variant="published")
    model.genre_head.kernel.assign(a["head_g_w"].T)
    model.genre_head.bias.assign(a["head_g_b"])
    model.cf_head.kernel.assign(a["head_cf_w"].T)
    model.cf_head.bias.assign(a["head_cf_b"])
    audio = tf.constant(a["audio"])
    _close(model.genre_head(audio), out["genre_logits"])
    _close(model.cf_head(audio), out["cf_pred"])
    # the model's loss parts on the heads' outputs (the audio encoder replaced by the given φ_a)
    model.audio_encoder.call = lambda mel, training=None: (audio, tf.zeros([B, 1024]))
    batch = {"mel": tf.zeros([B, 256, 48]), "genres": tf.constant(genres), "genre_mask": tf.constant(mask),
             "cf": tf.constant(a["cf_target"]), "song_id": tf.zeros([B], tf.int64)}
    total, shares = model._loss_shares(batch, training=False)
    _close(shares["genre"], out["bce"])
    _close(shares["cf"], out["mse"])
    _close(total, out["bce"] + out["mse"])


@requires_torch
def test_coupled_l2_adam_steps_like_torch_adam_with_weight_decay(reference):
    a, _, _, out = reference
    var = tf.Variable(a["w0"])  # float64: the update rule itself, not float32 rounding, is compared
    opt = CoupledL2Adam(learning_rate=1e-3)
    steps = []
    for g in a["grads"]:
        opt.apply_gradients([(tf.constant(g), var)])
        steps.append(var.numpy().copy())
    np.testing.assert_allclose(np.array(steps) - a["w0"], out["adam"] - a["w0"], rtol=1e-7, atol=0)  # Keras keeps lr in float32: 5e-8
    # Keras's own Adam with decoupled decay (what --weight-decay gives) is measurably another optimiser
    other = tf.Variable(a["w0"])
    adamw = keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-4, epsilon=1e-8)
    for g in a["grads"]:
        adamw.apply_gradients([(tf.constant(g), other)])
    assert np.abs((other.numpy() - a["w0"]) - (out["adam"][-1] - a["w0"])).max() > 1e-5


@requires_torch
def test_published_view_is_torch_view_as_time_major_input(reference):
    a, _, _, out = reference
    got = published_view(tf.constant(a["crop"])).numpy()
    np.testing.assert_array_equal(got, np.transpose(out["view"], (0, 2, 1)))
    assert not np.array_equal(got, a["crop"])
