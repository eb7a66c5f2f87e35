from ..formats import BUILTIN_FORMATS
from ..hookspecs import hookimpl


@hookimpl
def register_formats(register):
    for message_format in BUILTIN_FORMATS:
        register(message_format)
