// Must compile: the control case for the compile-fail tests beside it (same flags, same
// include path), so a failure there is the factory check and not the test set-up.
#include <connpool/pool.hpp>

struct Factory {
    int create() { return 1; }
    bool validate(int&) { return true; }
    bool reset(int&) { return true; }
    void destroy(int&) {}
};

int main() {
    connpool::Pool<int, Factory> pool{Factory{}};
    return pool.stats().open == 0 ? 0 : 1;
}
