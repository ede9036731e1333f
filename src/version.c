#include "weft_internal.h"

const char *weft_version(void)
{
    return WEFT_VERSION_STRING;
}
