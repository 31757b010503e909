// Must not compile: validate() takes a pointer, so the pool (which calls validate(Conn&))
// would silently never call it and would hand out dead connections.
#include <connpool/pool.hpp>

struct Factory {
    int create() { return 1; }
    bool validate(int*) { return true; }
};

int main() {
    connpool::Pool<int, Factory> pool{Factory{}};
    return pool.stats().open == 0 ? 0 : 1;
}
