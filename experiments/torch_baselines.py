"""PyTorch baselines for the benchmark: the original's cells and the fused ones.

This module imports torch at the top. It lives beside the benchmark's
entrypoint, not in the package: only ``experiments/benchmark.py`` imports
it, and only once it knows torch is installed (the optional extra
``pip install palindrome_jax[torch]``); the package works without it.

Both baselines do the work of one of our train steps: a batch, logits, mean
cross-entropy, backward, gradient clipping *before* the optimizer (the original
clipped after ``optimizer.step()`` and applied softmax before
``CrossEntropyLoss``; those are bugs, not work to reproduce).
"""

import math
import sys
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils import data as torch_data

from palindrome_jax import data
from palindrome_jax import train

ORIGINAL_CELLS = ("rnn", "lstm")
FUSED_CELLS = ("rnn", "irnn", "lstm", "gru")


def version() -> str:
  return torch.__version__


def num_threads() -> int:
  return torch.get_num_threads()


def device_for(jax_backend: str) -> torch.device:
  """CUDA when JAX runs on a GPU and this torch has CUDA, else the CPU."""
  if jax_backend == "gpu" and torch.cuda.is_available():
    return torch.device("cuda")
  return torch.device("cpu")


# The original's data: one palindrome at a time in Python and numpy, batched by
# a DataLoader (its PalindromeDataset, seeded here instead of global).


class PalindromeDataset(torch_data.Dataset):
  """Palindromes of ``seq_length`` digits, generated per example."""

  def __init__(self, seq_length: int, seed: int):
    self.seq_length = seq_length
    self.rng = np.random.default_rng(seed)

  def __len__(self):
    return sys.maxsize  # "Infinite", as the original's.

  def __getitem__(self, idx):
    full = self.generate_palindrome()
    return full[:-1], int(full[-1])

  def generate_palindrome(self) -> np.ndarray:
    left = [self.rng.integers(0, 10)
            for _ in range(math.ceil(self.seq_length / 2))]
    left = np.asarray(left, dtype=np.float32)
    right = (np.flip(left, 0) if self.seq_length % 2 == 0
             else np.flip(left[:-1], 0))
    return np.concatenate((left, right))


def _encode(digits_BxT: torch.Tensor, encoding: str) -> torch.Tensor:
  if encoding == "scalar":
    return digits_BxT.float().unsqueeze(-1)
  if encoding == "onehot":
    return F.one_hot(digits_BxT.long(), data.NUM_CLASSES).float()
  raise ValueError(f"unknown encoding {encoding!r}")


def _uniform_fan_in(*shape: int) -> nn.Parameter:
  bound = 1.0 / math.sqrt(shape[0])
  return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


class OriginalRNN(nn.Module):
  """The original's vanilla RNN: a Python loop of matmuls over time."""

  def __init__(self, input_dim: int, num_hidden: int, num_classes: int):
    super().__init__()
    self.num_hidden = num_hidden
    self.W_hx = _uniform_fan_in(input_dim, num_hidden)
    self.W_hh = _uniform_fan_in(num_hidden, num_hidden)
    self.B_h = nn.Parameter(torch.zeros(num_hidden))
    self.W_ph = _uniform_fan_in(num_hidden, num_classes)
    self.B_y = nn.Parameter(torch.zeros(num_classes))

  def forward(self, x_BxTxD):
    h_t = x_BxTxD.new_zeros(x_BxTxD.shape[0], self.num_hidden)
    for t in range(x_BxTxD.shape[1]):
      x_t = x_BxTxD[:, t]
      h_t = torch.tanh(x_t @ self.W_hx + h_t @ self.W_hh + self.B_h)
    # Logits: the original's softmax here was a bug.
    return h_t @ self.W_ph + self.B_y


class OriginalLSTM(nn.Module):
  """The original's LSTM: four separate gates, a Python loop over time."""

  def __init__(self, input_dim: int, num_hidden: int, num_classes: int):
    super().__init__()
    self.num_hidden = num_hidden
    for gate in "gifo":
      setattr(self, f"W_{gate}x", _uniform_fan_in(input_dim, num_hidden))
      setattr(self, f"W_{gate}h", _uniform_fan_in(num_hidden, num_hidden))
      setattr(self, f"B_{gate}", nn.Parameter(torch.zeros(num_hidden)))
    self.W_ph = _uniform_fan_in(num_hidden, num_classes)
    self.B_y = nn.Parameter(torch.zeros(num_classes))

  def forward(self, x_BxTxD):
    h_t = x_BxTxD.new_zeros(x_BxTxD.shape[0], self.num_hidden)
    c_t = x_BxTxD.new_zeros(x_BxTxD.shape[0], self.num_hidden)
    for t in range(x_BxTxD.shape[1]):
      x_t = x_BxTxD[:, t]
      i_t = torch.sigmoid(x_t @ self.W_ix + h_t @ self.W_ih + self.B_i)
      f_t = torch.sigmoid(x_t @ self.W_fx + h_t @ self.W_fh + self.B_f)
      o_t = torch.sigmoid(x_t @ self.W_ox + h_t @ self.W_oh + self.B_o)
      g_t = torch.tanh(x_t @ self.W_gx + h_t @ self.W_gh + self.B_g)
      c_t = f_t * c_t + i_t * g_t
      h_t = o_t * torch.tanh(c_t)
    return h_t @ self.W_ph + self.B_y


class FusedModel(nn.Module):
  """PyTorch's own ``nn.RNN``/``nn.LSTM``/``nn.GRU`` and a linear readout."""

  def __init__(self, cell: str, input_dim: int, num_hidden: int,
               num_classes: int):
    super().__init__()
    if cell in ("rnn", "irnn"):
      self.rnn = nn.RNN(input_dim, num_hidden, batch_first=True,
                        nonlinearity="tanh" if cell == "rnn" else "relu")
      if cell == "irnn":
        nn.init.eye_(self.rnn.weight_hh_l0)
    elif cell == "lstm":
      self.rnn = nn.LSTM(input_dim, num_hidden, batch_first=True)
    elif cell == "gru":
      self.rnn = nn.GRU(input_dim, num_hidden, batch_first=True)
    else:
      raise ValueError(f"no fused PyTorch module for cell {cell!r}")
    self.readout = nn.Linear(num_hidden, num_classes)

  def forward(self, x_BxTxD):
    h_BxTxH, _ = self.rnn(x_BxTxD)
    return self.readout(h_BxTxH[:, -1])


def _optimizer(params, cfg: train.RunConfig):
  """Adam or RMSprop as :func:`train.make_optimizer`; the step clips."""
  if cfg.optimizer == "adam":
    return torch.optim.Adam(params, lr=cfg.learning_rate)
  if cfg.optimizer == "rmsprop":
    return torch.optim.RMSprop(params, lr=cfg.learning_rate, alpha=0.99,
                               eps=1e-8)
  raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def _trainer(model: nn.Module, next_batch, cfg: train.RunConfig,
             device: torch.device) -> Callable[[int], None]:
  """``run(n)``: ``n`` train steps, returning once the device is done."""
  optimizer = _optimizer(model.parameters(), cfg)

  def run(num_steps: int) -> None:
    for _ in range(num_steps):
      inputs, targets = next_batch()
      optimizer.zero_grad(set_to_none=True)
      loss = F.cross_entropy(model(inputs), targets)
      loss.backward()
      nn.utils.clip_grad_norm_(model.parameters(), cfg.max_norm)
      optimizer.step()
    if device.type == "cuda":
      torch.cuda.synchronize(device)

  return run


def original_trainer(cfg: train.RunConfig, seed: int,
                     device: torch.device) -> Callable[[int], None]:
  """The original's hand-written cell fed by its per-example DataLoader."""
  if cfg.cell not in ORIGINAL_CELLS:
    raise ValueError(f"the original has no {cfg.cell!r} cell")
  with torch.random.fork_rng(devices=[]):
    torch.manual_seed(seed)
    cls = OriginalRNN if cfg.cell == "rnn" else OriginalLSTM
    model = cls(cfg.input_dim, cfg.num_hidden, data.NUM_CLASSES).to(device)
  loader = torch_data.DataLoader(PalindromeDataset(cfg.length + 1, seed),
                                 batch_size=cfg.batch_size, num_workers=0)
  batches = iter(loader)

  def next_batch():
    inputs, targets = next(batches)
    return (_encode(inputs.to(device), cfg.encoding), targets.to(device))

  return _trainer(model, next_batch, cfg, device)


def fused_trainer(cfg: train.RunConfig, seed: int,
                  device: torch.device) -> Callable[[int], None]:
  """``nn.RNN``/``nn.LSTM``/``nn.GRU`` with batches made on tensors."""
  return fused_run(cfg, seed, device)[0]


def fused_run(cfg: train.RunConfig, seed: int, device: torch.device):
  """``(run, model, next_batch)`` of :func:`fused_trainer`: its trainer, the
  model it trains, and the batches it draws (for a test after training)."""
  if cfg.cell not in FUSED_CELLS:
    raise ValueError(f"PyTorch has no fused {cfg.cell!r} module")
  with torch.random.fork_rng(devices=[]):
    torch.manual_seed(seed)
    model = FusedModel(cfg.cell, cfg.input_dim, cfg.num_hidden,
                       data.NUM_CLASSES).to(device)
  generator = torch.Generator(device=device).manual_seed(seed)
  num_digits = cfg.length + 1

  def next_batch():
    left_BxL = torch.randint(0, data.NUM_CLASSES,
                             (cfg.batch_size, (num_digits + 1) // 2),
                             generator=generator, device=device)
    full_BxP = torch.cat([left_BxL, left_BxL[:, :num_digits // 2].flip(1)], 1)
    return (_encode(full_BxP[:, :cfg.length], cfg.encoding),
            full_BxP[:, cfg.length])

  return _trainer(model, next_batch, cfg, device), model, next_batch
