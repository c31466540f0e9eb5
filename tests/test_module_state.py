"""No module-level mutable state: everything a stack changes lives in its Kernel or Vnet.

Every module of the `vimage` package is imported and each of its globals checked:
only immutable values (recursively), classes, functions, modules and a few handle
types are allowed. Class attributes and function defaults defined in the package are
checked the same way, since they are just as global. Two kernels in one process must
then be fully independent, which the last test checks on the wire.
"""

from __future__ import annotations
import __future__

import ast
import contextvars
import dataclasses
import enum
import importlib
import inspect
import pkgutil
import re
import struct
import types
import typing
from collections import deque, namedtuple
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest

import vimage
from vimage import topo
from vimage.kernel import Kernel
from vimage.socket.socket import AF_INET, SOCK_DGRAM

# (module, name) pairs allowed to hold a mutable value, each with the reason. Keep empty.
ALLOWED: frozenset[tuple[str, str]] = frozenset()

_SCALARS = (type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis),
            type(NotImplemented))
_HANDLES = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
            types.MethodDescriptorType, types.WrapperDescriptorType, struct.Struct, re.Pattern,
            contextvars.ContextVar, enum.Enum, TypeVar, typing.ParamSpec, types.GenericAlias,
            types.UnionType, property, staticmethod, classmethod, types.MemberDescriptorType,
            types.GetSetDescriptorType, __future__._Feature,
            type(namedtuple("_T", "field").field),  # NamedTuple field accessors
            pytest.StashKey, type(pytest.fixture(lambda: None)))  # the pytest plugin's handles


def mutable_reason(value: Any, depth: int = 0) -> str | None:
    """Why `value` is (or may hold) mutable state, or None if it is immutable."""
    if depth > 20:
        return "nested too deeply to prove immutable"
    if isinstance(value, (_SCALARS, _HANDLES)):
        if isinstance(value, (staticmethod, classmethod)):
            return mutable_reason(value.__func__, depth + 1)
        return None
    if type(value).__module__ == "typing":  # aliases, Literal[...], Optional[...], NewType
        return None
    if isinstance(value, (tuple, frozenset)):
        if isinstance(value, tuple) and hasattr(value, "__dict__"):
            return f"a {type(value).__name__} (tuple subclass with a __dict__)"
        for item in value:
            reason = mutable_reason(item, depth + 1)
            if reason is not None:
                return f"contains {reason}"
        return None
    if isinstance(value, types.MappingProxyType):
        for key, item in value.items():
            reason = mutable_reason(key, depth + 1) or mutable_reason(item, depth + 1)
            if reason is not None:
                return f"read-only mapping that contains {reason}"
        return None
    if dataclasses.is_dataclass(value) and value.__dataclass_params__.frozen \
            and not hasattr(value, "__dict__"):
        for field in dataclasses.fields(value):
            reason = mutable_reason(getattr(value, field.name), depth + 1)
            if reason is not None:
                return f"frozen dataclass field {field.name} is {reason}"
        return None
    return f"a {type(value).__module__}.{type(value).__qualname__}"


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _is_sunder(name: str) -> bool:  # enum's _member_map_, NamedTuple's _field_defaults
    if name in ("_field_defaults", "_fields", "_abc_impl"):  # _abc_impl: abc's own caches
        return True
    return len(name) > 2 and name[0] == name[-1] == "_" and name[1] != "_"


def _compiled_method(value: Any, modname: str) -> bool:
    """A method of a class that the compiled build (vimage.compiled) keeps a Python class:
    mypyc makes it an instance of a generated callable type (`cancel_Timer_obj`), with
    no attributes of its own."""
    kind = type(value)
    return (kind.__module__ == modname and kind.__name__.endswith("_obj") and callable(value)
            and not hasattr(value, "__dict__") and not getattr(kind, "__slots__", ()))


def source_of(module: types.ModuleType) -> Path:
    """The module's .py file, also when it was imported compiled (vimage.compiled): the
    extension sits beside it, `ip.cpython-311-x86_64-linux-gnu.so` for `ip.py`."""
    path = Path(module.__file__)
    return path if path.suffix == ".py" else path.with_name(path.name.split(".")[0] + ".py")


def module_violations(module: types.ModuleType) -> list[str]:
    """Every mutable global of `module`, its classes and its functions' defaults."""
    found: list[str] = []
    modname = module.__name__

    def check(where: str, name: str, value: Any) -> None:
        if (modname, name) in ALLOWED or _compiled_method(value, modname):
            return
        reason = mutable_reason(value)
        if reason is not None:
            found.append(f"{where}{name} is {reason}")

    def check_function(where: str, func: Any) -> None:
        func = inspect.unwrap(func) if callable(func) else func
        if isinstance(func, (staticmethod, classmethod)):
            func = func.__func__
        if not isinstance(func, types.FunctionType):
            return
        for i, default in enumerate(func.__defaults__ or ()):
            check(f"{where}{func.__name__}() default #", str(i), default)
        for key, default in (func.__kwdefaults__ or {}).items():
            check(f"{where}{func.__name__}() default ", key, default)

    for name, value in vars(module).items():
        if _is_dunder(name):
            continue  # __path__, __annotations__, __all__, __builtins__: Python's own
        if isinstance(value, type) and value.__module__ == modname:
            for attr, member in vars(value).items():
                if _is_dunder(attr) or _is_sunder(attr):
                    continue
                if isinstance(member, (types.FunctionType, staticmethod, classmethod)):
                    check_function(f"{modname}.{name}.", member)
                elif not isinstance(member, enum.Enum):
                    check(f"{modname}.{name}.", attr, member)
            continue
        if isinstance(value, types.FunctionType):
            if value.__module__ == modname:
                check_function(f"{modname}.", value)
            continue
        check(f"{modname}.", name, value)
    return found


def _all_modules() -> list[types.ModuleType]:
    modules = [vimage]
    for info in pkgutil.walk_packages(vimage.__path__, "vimage."):
        modules.append(importlib.import_module(info.name))
    return modules


MODULES = tuple(_all_modules())


def test_walk_finds_the_package():
    names = {m.__name__ for m in MODULES}
    assert {"vimage.kernel", "vimage.sched", "vimage.vnet", "vimage.net.ifnet",
            "vimage.netinet.ip", "vimage.netinet.udp", "vimage.wire.ipv4"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_no_mutable_module_state(module):
    assert module_violations(module) == []


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_no_global_statements(module):
    """Rebinding a global (`global counter; counter += 1`) is state even for ints."""
    with open(source_of(module), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    bad = [f"line {n.lineno}: global {', '.join(n.names)}" for n in ast.walk(tree)
           if isinstance(n, ast.Global)]
    assert bad == []


def test_allowed_exceptions_exist():
    for modname, name in ALLOWED:
        assert hasattr(importlib.import_module(modname), name), (modname, name)


# -- the checker itself must be able to fail --------------------------------------------
class _Point(NamedTuple):
    x: int
    y: tuple[int, ...]


class _Plain:
    pass


class _Slotted:
    __slots__ = ("v",)

    def __init__(self) -> None:
        self.v = 1


@dataclasses.dataclass(frozen=True, slots=True)
class _Frozen:
    a: int
    b: tuple[str, ...]


def _synthetic(**attrs: Any) -> types.ModuleType:
    mod = types.ModuleType("vimage_synthetic")
    for name, value in attrs.items():
        setattr(mod, name, value)
    return mod


@pytest.mark.parametrize("value", [
    {}, {"a": 1}, [], [1], set(), bytearray(b"x"), deque(), types.SimpleNamespace(),
    _Plain(), _Slotted(), (1, [2]), (1, ((2, {}),)), frozenset({(1, 2), _Plain()}),
    _Point(1, (2, [3])), memoryview(bytearray(2)), types.MappingProxyType({"k": []}),
    __import__("collections").defaultdict(list), __import__("collections").Counter(),
    __import__("collections").OrderedDict(), __import__("functools").partial(print),
    __import__("functools").lru_cache(maxsize=None)(lambda: 1),
])
def test_checker_catches_mutable_globals(value):
    mod = _synthetic(fine=(1, "two", b"3", None, 4.5), state=value)
    problems = module_violations(mod)
    assert len(problems) == 1 and problems[0].startswith("vimage_synthetic.state is")


@pytest.mark.parametrize("value", [
    None, True, 3, 2.5, 1j, "s", b"b", (1, ("x", frozenset({2}))), frozenset(),
    struct.Struct("!H"), re.compile("x"), contextvars.ContextVar("cv"), TypeVar("T"),
    _Point(1, (2, 3)), _Frozen(1, ("a",)), int, len, typing.Optional[int],  # noqa: UP045
    int | None,
    list[int], types, types.MappingProxyType({"k": (1,)}), enum.Enum("E", "A B").A,
])
def test_checker_accepts_immutable_globals(value):
    assert module_violations(_synthetic(value=value)) == []


def test_checker_sees_class_attributes_and_defaults():
    mod = types.ModuleType("vimage_synthetic")

    class Registry:
        instances: typing.ClassVar[list[int]] = []
        limit = 4

    def remember(x: int, seen: list[int] = []) -> None:  # noqa: B006 - deliberately bad
        seen.append(x)

    def fine(x: int, y: tuple[int, ...] = ()) -> None:
        return None

    for obj in (Registry, remember, fine):
        obj.__module__ = mod.__name__
        setattr(mod, obj.__name__, obj)
    problems = module_violations(mod)
    assert len(problems) == 2
    assert any("Registry.instances" in p for p in problems)
    assert any("remember() default" in p for p in problems)


def test_allowed_list_suppresses(monkeypatch):
    mod = _synthetic(cache={})
    assert module_violations(mod)
    monkeypatch.setitem(globals(), "ALLOWED", frozenset({("vimage_synthetic", "cache")}))
    assert module_violations(mod) == []


# -- two kernels in one process ------------------------------------------------------------
def _kernel_with_pair(seed: int) -> tuple[Kernel, Any, Any]:
    k = Kernel(clock="virtual", seed=seed)
    a = k.create("lab")
    b = k.create("lab.peer")
    topo.connect(a, "192.168.1.1/24", b, "192.168.1.2/24")
    return k, a, b


def _counters(vnet: Any) -> tuple:
    stats = (vnet.ip.stats, vnet.udp.stats, vnet.icmp.stats, vnet.arp.stats)
    values = [getattr(s, n) for s in stats for n in s.__slots__]
    values = [tuple(v) if isinstance(v, list) else v for v in values]
    for ifp in vnet.ifaces.values():
        values.append((ifp.name, ifp.ipackets, ifp.opackets, ifp.ibytes, ifp.obytes))
    values.append(tuple(sorted(vnet.arp.table)))
    values.append(tuple(sorted(vnet.udp.ports)))
    return tuple(values)


def test_two_kernels_are_independent():
    k1, a1, b1 = _kernel_with_pair(1)
    k2, a2, b2 = _kernel_with_pair(1)  # same seed: the same MACs, ports and ids
    assert a1.ifaces["epair0a"].mac == a2.ifaces["epair0a"].mac
    k1.run(1)
    k2.run(1)
    before = (_counters(a2), _counters(b2), _counters(k2.base), k2.now_ns(), k2.sched.events)
    rx = b1.socket(AF_INET, SOCK_DGRAM)
    rx.bind(("192.168.1.2", 9))
    rx.settimeout(2)
    tx = a1.socket(AF_INET, SOCK_DGRAM)
    for i in range(3):
        tx.sendto(b"k1 #%d" % i, ("192.168.1.2", 9))
        assert rx.recv(100) == b"k1 #%d" % i
    k1.run(100)
    assert b1.udp.stats.delivered == 3 and a1.ip.stats.localout >= 3
    assert b1.udp.ports and not b2.udp.ports
    after = (_counters(a2), _counters(b2), _counters(k2.base), k2.now_ns(), k2.sched.events)
    assert after == before
    assert k1.now_ns() > k2.now_ns()
    # the second kernel's same-named vnets and port are free and work on their own
    rx2 = b2.socket(AF_INET, SOCK_DGRAM)
    rx2.bind(("192.168.1.2", 9))
    rx2.settimeout(2)
    a2.socket(AF_INET, SOCK_DGRAM).sendto(b"k2", ("192.168.1.2", 9))
    assert rx2.recv(100) == b"k2"
    assert b1.udp.stats.delivered == 3 and b2.udp.stats.delivered == 1
    # destroying a vnet in one kernel leaves the other's same-named vnet alone
    k1.destroy("lab")
    assert "lab" not in k1 and "lab" in k2 and a2.alive and b2.alive
