"""How far back can a recurrent network remember? Cells, training and tools.

The names a notebook or script needs::

    from palindrome_jax import RunConfig, train_and_evaluate

    cfg = RunConfig(cell="lstm", length=20, train_steps=2000)
    result = train_and_evaluate(cfg, seeds=(42, 43))

Importing the package registers every built-in cell, including those defined
in their own modules (:mod:`palindrome_jax.lru`, :mod:`palindrome_jax.bptt`,
:mod:`palindrome_jax.minrnn`, :mod:`palindrome_jax.rglru`,
:mod:`palindrome_jax.s6`, :mod:`palindrome_jax.xlstm`,
:mod:`palindrome_jax.deltanet`, :mod:`palindrome_jax.lem`).
"""

# Each module registers its cells (and their parallel forms) on import.
from palindrome_jax import bptt as _bptt  # noqa: F401  (rnn_bptt, lstm_bptt)
from palindrome_jax import deltanet as _deltanet  # noqa: F401  (gated_deltanet)
from palindrome_jax import lem as _lem  # noqa: F401  (lem)
from palindrome_jax import lru as _lru  # noqa: F401  (lru)
from palindrome_jax import minrnn as _minrnn  # noqa: F401  (mingru, minlstm)
from palindrome_jax import rglru as _rglru  # noqa: F401  (rglru)
from palindrome_jax import s6 as _s6  # noqa: F401  (s6, Mamba's block)
from palindrome_jax import xlstm as _xlstm  # noqa: F401  (slstm, mlstm)
from palindrome_jax.cells import Cell, register, uniform_fan_in
from palindrome_jax.evaluate import evaluate_params
from palindrome_jax.gradients import gradient_norms
from palindrome_jax.horizon import HorizonConfig, run_horizon
from palindrome_jax.sweep import SweepConfig, run_sweep
from palindrome_jax.train import RunConfig, train_and_evaluate

__all__ = ["Cell", "register", "uniform_fan_in", "evaluate_params",
           "gradient_norms", "HorizonConfig", "run_horizon", "SweepConfig",
           "run_sweep", "RunConfig", "train_and_evaluate"]
