// weft.h alone, as C++: it must be extern "C" and free of C-only syntax.
#include <weft.h>

int main()
{
    auto v = &weft_version;
    auto st = &weft_coro_status;
    return (v != nullptr && st != nullptr && WEFT_VERSION_MAJOR >= 0) ? 0 : 1;
}
