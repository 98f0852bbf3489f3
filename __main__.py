"""Entry point for `pulumi up` / `pulumi preview`: stacks/<stack>.yaml -> Kubernetes."""

import pulumi

from components import sdk_performance
from components.program import PlaintextPasswordError, run
from components.stack_model import SpecError

sdk_performance.install()  # linear, lean registration of big stacks (see the module)
try:
    run()
except (SpecError, PlaintextPasswordError) as error:
    # RunError ends the program with this message and no traceback. Validation runs before
    # the first registration, so nothing has been registered.
    raise pulumi.RunError(f"{error}\nNothing was deployed.") from None
