from ..api.formats import BUILTIN_FORMATS
from ..api.hookspecs import hookimpl


@hookimpl(tryfirst=True)
def register_formats(register):
    for message_format in BUILTIN_FORMATS:
        register(message_format)
