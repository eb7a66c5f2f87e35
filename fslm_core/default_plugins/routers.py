from ..api.hookspecs import hookimpl
from ..api.routers import BUILTIN_ROUTERS


@hookimpl(tryfirst=True)
def register_routers(register):
    for router in BUILTIN_ROUTERS:
        register(router)
