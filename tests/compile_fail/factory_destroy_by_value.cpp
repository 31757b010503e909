// Must not compile: destroy() takes a pointer, not the connection, so the pool would never
// call it.
#include <connpool/pool.hpp>

struct Factory {
    int create() { return 1; }
    void destroy(const char*) {}
};

int main() {
    connpool::Pool<int, Factory> pool{Factory{}};
    return pool.stats().open == 0 ? 0 : 1;
}
