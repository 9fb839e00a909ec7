"""The four benchmark models of ../shared/BENCH_MODELS.md in PyTorch 1.13.

Each mirrors models/<name>.kl: the same shapes, the same layers, the same loss and the same
optimizer with the same hyperparameters. Parameter counts are checked against
BENCH_MODELS.md by `python3 bench/torch_models.py`.

    model, opt, inputs, loss_fn = build("mlp", batch=128)
    train_step(model, opt, inputs, loss_fn)        # zero_grad, forward, loss, backward, step

Inputs are made once per process (random floats; integer ids and labels in range, int64 as
PyTorch's embedding and cross_entropy expect).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# name -> (default batch, trainable params per BENCH_MODELS.md)
MODELS = {
    "mlp": (128, 535818),
    "cnn": (64, 421642),
    "textcls": (32, 419586),
    "transformer": (16, 470784),
}


class MLP(nn.Module):
    """models/mlp.kl: 784 -> 512 -> ReLU -> 256 -> ReLU -> 10."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 512)
        self.fc2 = nn.Linear(512, 256)
        self.fc3 = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):
    """models/cnn.kl: two conv3x3(pad 1) + ReLU + maxpool2 blocks, then 3136 -> 128 -> 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


class TextCls(nn.Module):
    """models/textcls.kl: Embedding(5000, 64) -> LSTM(64 -> 128) -> last step -> Linear(128, 2)."""

    def __init__(self, vocab=5000, embed=64, hidden=128):
        super().__init__()
        self.table = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, ids):
        states, _ = self.lstm(self.table(ids))
        return self.head(states[:, -1, :])


class Block(nn.Module):
    """One pre-LayerNorm block of models/transformer.kl: x + attn(ln1(x)), then h + mlp(ln2(h))."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)
        self.scale = 1.0 / math.sqrt(d // heads)  # 0.17677669529663687 for dh = 32

    def forward(self, x, mask):
        b, t, d = x.shape

        def split(y):  # [b, t, d] -> [b, heads, t, dh]
            return y.reshape(b, t, self.heads, d // self.heads).permute(0, 2, 1, 3)

        a = self.ln1(x)
        q, k, v = split(self.q(a)), split(self.k(a)), split(self.v(a))
        scores = q @ k.transpose(-2, -1) * self.scale + mask
        mixed = torch.softmax(scores, dim=-1) @ v
        merged = mixed.permute(0, 2, 1, 3).reshape(b, t, d)
        h = x + self.o(merged)
        return h + self.down(F.gelu(self.up(self.ln2(h))))


class Transformer(nn.Module):
    """models/transformer.kl: character LM, vocab 256, d 128, 4 heads, 2 blocks, seq 64."""

    def __init__(self, vocab=256, seq=64, d=128, heads=4):
        super().__init__()
        self.tok = nn.Parameter(torch.randn(vocab, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(seq, d) * 0.02)
        self.block1 = Block(d, heads)
        self.block2 = Block(d, heads)
        self.lnf = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("mask", torch.triu(torch.full((seq, seq), float("-inf")), 1))
        for m in self.modules():  # linear weights normal(0.02), biases zero, as the .kl
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, ids):
        x = F.embedding(ids, self.tok) + self.pos
        x = self.block2(self.block1(x, self.mask), self.mask)
        return self.head(self.lnf(x))


def build(name, batch=None, seed=0):
    """(model, optimizer, inputs, loss_fn) for one benchmark model; inputs[:-1] feed the
    forward pass (inference), inputs[-1] is the target; loss_fn(logits, target)."""
    torch.manual_seed(seed)
    if batch is None:
        batch = MODELS[name][0]
    ce = F.cross_entropy
    if name == "mlp":
        model = MLP()
        inputs = [torch.rand(batch, 784) * 2 - 1, torch.randint(0, 10, (batch,))]
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = ce
    elif name == "cnn":
        model = CNN()
        inputs = [torch.rand(batch, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (batch,))]
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = ce
    elif name == "textcls":
        model = TextCls()
        inputs = [torch.randint(0, 5000, (batch, 50)), torch.randint(0, 2, (batch,))]
        opt = torch.optim.Adam(model.parameters(), lr=0.001)
        loss_fn = ce
    elif name == "transformer":
        model = Transformer()
        inputs = [torch.randint(0, 256, (batch, 64)), torch.randint(0, 256, (batch, 64))]
        opt = torch.optim.Adam(model.parameters(), lr=0.001)

        def loss_fn(logits, targets):  # cross-entropy over all batch x 64 positions
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    else:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")
    return model, opt, inputs, loss_fn


def train_step(model, opt, inputs, loss_fn):
    """One training step: forward + loss + backward + optimizer update."""
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(*inputs[:-1]), inputs[-1])
    loss.backward()
    opt.step()
    return loss


def count_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


if __name__ == "__main__":
    ok = True
    for name, (batch, want) in MODELS.items():
        model, opt, inputs, loss_fn = build(name)
        got = count_params(model)
        loss = train_step(model, opt, inputs, loss_fn).item()
        shape = tuple(model(*inputs[:-1]).shape)
        print(f"{name:12s} params {got:8d} (BENCH_MODELS.md: {want}) logits {shape} loss {loss:.4f}")
        ok &= got == want
    raise SystemExit(0 if ok else 1)
