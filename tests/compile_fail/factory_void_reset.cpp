// Must not compile: reset() returns void, so the pool could not tell a dirty connection from a
// clean one, and would silently never call it.
#include <connpool/pool.hpp>

struct Factory {
    int create() { return 1; }
    void reset(int&) {}
};

int main() {
    connpool::Pool<int, Factory> pool{Factory{}};
    return pool.stats().open == 0 ? 0 : 1;
}
