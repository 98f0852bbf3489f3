"""Where the generated-password provider lived up to 0.3.0 (now components/generated_password.py).

A Pulumi dynamic resource keeps its provider in state, pickled by reference to its module
(`components.broker.password._PasswordProvider`), and the engine unpickles that reference to
refresh or delete the resource. Stacks that have not updated their passwords since still
name this module; removing it would make their `pulumi destroy` fail.
"""

from ..generated_password import _PasswordProvider

__all__ = ["_PasswordProvider"]
