/* weft.h alone, as strict C11: no GNU extensions, no other headers. */
#include <weft.h>

int main(void)
{
    /* Reference a few declarations so they are type-checked. */
    const char *(*v)(void) = weft_version;
    int (*st)(const weft_coro *) = weft_coro_status;
    return (v != 0 && st != 0 && WEFT_VERSION_MAJOR >= 0) ? 0 : 1;
}
