"""How far back can a recurrent network remember? Cells, training and tools.

Importing the package registers every built-in cell, including those defined
in their own modules (:mod:`palindrome_jax.lru`).
"""

from palindrome_jax import lru as _lru  # noqa: F401  (registers "lru")
