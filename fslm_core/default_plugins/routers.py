from ..hookspecs import hookimpl
from ..routers import BUILTIN_ROUTERS


@hookimpl
def register_routers(register):
    for router in BUILTIN_ROUTERS:
        register(router)
