// The smallest useful connpool program: a factory, a pool, a lease.
#include <connpool.hpp>

#include <iostream>
#include <string>

struct Connection {  // stands in for your database handle
    int id;
    std::string query(const std::string& sql) { return "conn " + std::to_string(id) + ": " + sql; }
};

struct Factory {  // the pool calls create() when it needs a connection
    int next = 0;
    Connection create() { return Connection{++next}; }
    bool validate(Connection&) { return true; }  // optional: is an idle one still alive?
};

int main() {
    connpool::Pool pool{Factory{}, connpool::PoolOptions{.max_size = 4}};
    {
        auto lease = pool.acquire();  // waits up to acquire_timeout (30 s by default)
        std::cout << lease->query("select 1") << '\n';
    }  // the connection goes back to the pool here
    const auto stats = pool.stats();
    std::cout << "open " << stats.open << ", idle " << stats.idle << '\n';
    return stats.idle == 1 ? 0 : 1;
}
