"""TEMPORARY stub of he_agg.state (in-memory only) until the real module lands."""
from __future__ import annotations
import contextlib
from typing import Callable, Iterator
from .errors import BudgetExhaustedError, EquivocationError, ReplayError

MAX_ROUND_STEP = 1 << 20


class MemberState:
    def __init__(self) -> None:
        self._approvals: dict[int, tuple[bytes, bytes]] = {}
        self._released: dict[bytes, int] = {}
        self._kv: dict[tuple[str, str], bytes] = {}

    @classmethod
    def open(cls, path, *, owner: bytes) -> "MemberState":
        return cls()

    def approve(self, round_id: int, statement_digest: bytes, sign: Callable[[], bytes]) -> bytes:
        have = self._approvals.get(round_id)
        if have is not None:
            if have[0] != statement_digest:
                raise EquivocationError(f"round {round_id} already approved another request")
            return have[1]
        top = max(self._approvals, default=0)
        if round_id > top + MAX_ROUND_STEP:
            raise ReplayError("round id jumps too far")
        sig = sign()
        self._approvals[round_id] = (statement_digest, sig)
        return sig

    def approval(self, round_id: int):
        return self._approvals.get(round_id)

    def release(self, key: bytes, cost: int, limit: int) -> bool:
        if key in self._released:
            return False
        if self.spent() + cost > limit:
            raise BudgetExhaustedError(f"budget exhausted: spent {self.spent()}, cost {cost}, limit {limit}")
        self._released[key] = cost
        return True

    def spent(self) -> int:
        return sum(self._released.values())

    def released(self, key: bytes) -> bool:
        return key in self._released

    def get(self, namespace: str, key: str):
        return self._kv.get((namespace, key))

    def put(self, namespace: str, key: str, value: bytes) -> None:
        self._kv[(namespace, key)] = value

    def items(self, namespace: str):
        return [(k, v) for (n, k), v in sorted(self._kv.items()) if n == namespace]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def close(self) -> None:
        pass
