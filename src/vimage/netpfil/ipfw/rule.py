"""An ipfw rule: its number, set, action, counters and its body compiled to predicates.

FreeBSD compiles a rule to a string of `ipfw_insn` microinstructions once, when it is
added (sbin/ipfw/ipfw2.c compile_rule), and ip_fw2.c's ipfw_chk interprets them per
packet. Here the parser (vimage.netpfil.ipfw.parse) turns each match option into an
expression over precomputed values and compiles a rule's expressions into one function,
`match(args) -> bool`, once: a packet costs one call per rule and no string work. The
canonical text (what `ipfw list` prints) is made at the same time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from vimage.netpfil.ipfw.packet import Args

Pred = Callable[["Args"], bool]

# actions (FreeBSD's O_ACCEPT ... O_SETFIB)
A_ALLOW = 0
A_DENY = 1
A_REJECT = 2  # arg: ICMP unreachable code, or CODE_RST for `reset`
A_UNREACH6 = 3
A_COUNT = 4
A_SKIPTO = 5
A_CALL = 6
A_RETURN = 7
A_CHECK_STATE = 8
A_PIPE = 9
A_QUEUE = 10
A_NAT = 11
A_DIVERT = 12
A_TEE = 13
A_FWD = 14
A_SETFIB = 15

CODE_RST = 256  # ICMP_REJECT_RST: `reset`
TABLEARG = -1  # an action argument taken from the last table lookup's value
DEFAULT_RULE = 65535
RESVD_SET = 31  # the default rule's set, which cannot be disabled
SET_MASK_ALL = (1 << 32) - 1


class StateSpec(NamedTuple):
    """keep-state / record-state / limit: make a dynamic rule when the rule matches."""

    kind: str  # "keep-state", "record-state" or "limit"
    name: str  # the state name (":default")
    limit_fields: tuple[str, ...] = ()  # src-addr, src-port, dst-addr, dst-port
    limit: int = 0


class Rule:
    __slots__ = ("action", "arg", "bcnt", "fwd", "idx", "log", "log_left", "logamount",
                 "match", "num", "pcnt", "plain", "prob", "probe", "set", "setbit", "state", "tag",
                 "text", "timestamp", "untag")

    def __init__(self, num: int, action: int, arg: int = 0) -> None:
        self.num = num
        self.set = 0
        self.setbit = 1
        self.prob = 1.0
        self.action = action
        self.arg = arg
        self.fwd: tuple[int, int, int] | None = None  # fwd ADDR,PORT and ADDR's family
        self.log = False
        self.logamount = 0  # 0: net.inet.ip.fw.verbose_limit when added
        self.log_left = 0
        self.match: Pred = _always  # the compiled conditions (vimage.netpfil.ipfw.parse)
        self.state: StateSpec | None = None
        self.probe = False  # look the packet up in the dynamic table first
        self.plain = True  # no probe, no prob, not check-state: the evaluator's fast path
        self.tag = 0  # tag N
        self.untag = 0  # untag N
        self.text = ""  # the canonical body, as `ipfw list` prints it after the number
        self.pcnt = 0
        self.bcnt = 0
        self.timestamp = 0  # seconds of the last match (0: never)
        self.idx = 0  # position in the ruleset

    def set_set(self, set_: int) -> None:
        self.set = set_
        self.setbit = 1 << set_

    def copy(self) -> Rule:
        dup = Rule(self.num, self.action, self.arg)
        for name in self.__slots__:
            setattr(dup, name, getattr(self, name))
        return dup



def _always(args: Args) -> bool:
    return True
