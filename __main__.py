"""Entry point for `pulumi up` / `pulumi preview`: stacks/<stack>.yaml -> Kubernetes."""

import pulumi

from components.program import PlaintextPasswordError, run
from components.spec import SpecError

try:
    run()
except (SpecError, PlaintextPasswordError) as error:
    # RunError ends the program with this message and no traceback. Validation runs before
    # the first registration, so nothing has been registered.
    raise pulumi.RunError(f"{error}\nNothing was deployed.") from None
