"""Reproducible, paired random numbers.

The scheme (the experiments build paired comparisons on it, so it is part of the contract):

* Replication ``i`` owns stream ``i`` of ``SeedSequence(seed).spawn(replications)``, that is
  ``SeedSequence(seed, spawn_key=(i,))``; its first 64-bit word is the replication key.
* Inside a replication every random number is a pure function of the replication key, a
  *purpose* (arrivals, outcome, duration, deal value, uncertain input, pipeline), the stable
  id of the part it belongs to (a channel or stage name hashed with BLAKE2b, never Python's
  ``hash()``), and the identity of the lead it belongs to. A lead's identity is its channel,
  its arrival month and its index in that month (or, for the opening pipeline, its entry).
* Uniforms are made by a counter-based generator: the SplitMix64 finaliser applied to the
  key XOR a per-purpose salt. NumPy's ``Generator`` cannot be indexed by (lead, purpose), and
  this is what makes draws *belong to leads*: a lead keeps its outcome and duration draws
  when another part of the scenario changes, and a channel with more leads keeps its
  existing leads' draws (the extra leads get new indices). It also makes every number
  independent of how replications are batched or spread over workers.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)

# Purposes: stable small integers, never renumbered (they are part of the seeding contract).
ARRIVAL = 1
OUTCOME = 2
DURATION = 3
DEAL_VALUE = 4
INPUT = 5
PIPELINE = 6
PATIENCE = 7


def _mix_inplace(x: np.ndarray) -> np.ndarray:
    t = np.right_shift(x, _S30)
    np.bitwise_xor(x, t, out=x)
    np.multiply(x, _M1, out=x)
    np.right_shift(x, _S27, out=t)
    np.bitwise_xor(x, t, out=x)
    np.multiply(x, _M2, out=x)
    np.right_shift(x, _S31, out=t)
    np.bitwise_xor(x, t, out=x)
    return x


def mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of a uint64 array (returns a new array)."""
    return _mix_inplace(np.array(x, dtype=np.uint64, copy=True))


def _mix_int(value: int) -> int:
    return int(mix(np.array([value & _MASK], dtype=np.uint64))[0])


def stable_id(name: str) -> int:
    """A 64-bit id of a name that is the same on every machine and run."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


@functools.lru_cache(maxsize=65536)
def salt(purpose: int, part: int = 0, index: int = 0) -> np.uint64:
    """The salt of one purpose, part (a stable id) and index (a visit number, a component...)."""
    value = _mix_int((purpose << 56) ^ part)
    value = _mix_int(value ^ ((index * _GOLDEN) & _MASK))
    return np.uint64(value)


def derive(keys: np.ndarray, salt_value: np.uint64 | np.ndarray) -> np.ndarray:
    """Child keys: independent streams of ``keys`` for the purpose that ``salt_value`` names."""
    return _mix_inplace(np.bitwise_xor(np.asarray(keys, dtype=np.uint64), salt_value))


def uniform(keys: np.ndarray, salt_value: np.uint64 | np.ndarray) -> np.ndarray:
    """One uniform in the open interval (0, 1) per key, 53 bits of resolution."""
    return to_unit(derive(keys, salt_value))


def to_unit(bits: np.ndarray) -> np.ndarray:
    """Uniforms in (0, 1) from random 64-bit words (consumes ``bits``)."""
    np.right_shift(bits, _S11, out=bits)
    u = bits.astype(np.float64)
    u *= 2.0**-53
    u += 2.0**-54
    return u


def indexed(keys: np.ndarray, index: np.ndarray | int) -> np.ndarray:
    """Keys of the members ``index`` of the families ``keys`` (e.g. lead k of a month)."""
    idx = np.asarray(index, dtype=np.uint64) * np.uint64(_GOLDEN)
    return mix(np.asarray(keys, dtype=np.uint64) + idx)


def replication_keys(seed: int, replications: np.ndarray) -> np.ndarray:
    """The key of each replication index: stream i of ``SeedSequence(seed).spawn(n)``."""
    out = np.empty(len(replications), dtype=np.uint64)
    for j, i in enumerate(np.asarray(replications).tolist()):
        out[j] = np.random.SeedSequence(seed, spawn_key=(int(i),)).generate_state(1, np.uint64)[0]
    return out


def keys_from_rng(rng: np.random.Generator, size: int) -> np.ndarray:
    """Fresh keys from an ordinary NumPy generator (for sampling outside the engines)."""
    return rng.integers(0, np.iinfo(np.uint64).max, size=size, dtype=np.uint64, endpoint=True)


def salts(purpose: int, parts: np.ndarray, index: int = 0) -> np.ndarray:
    """:func:`salt` of many parts at once (e.g. one per opening-pipeline lead)."""
    parts = np.asarray(parts, dtype=np.uint64)
    first = mix(np.bitwise_xor(parts, np.uint64((purpose << 56) & _MASK)))
    return mix(np.bitwise_xor(first, np.uint64((index * _GOLDEN) & _MASK)))


_PICK = salt(9, 0x706F7374)  # "post": which posterior draw a replication takes


def posterior_pick(rep_keys: np.ndarray, size: int) -> np.ndarray:
    """The posterior draw each replication takes (one of ``size``): one per replication,
    from its own stream, the same for every part of the model (a joint draw)."""
    u = uniform(rep_keys, _PICK)
    return np.minimum((u * size).astype(np.int64), size - 1)
