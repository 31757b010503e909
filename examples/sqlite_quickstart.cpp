// The README's second example: a pool of SQLite connections, and a backup run through it as a
// job with progress. Writes app.db and app-backup.db in the current directory.
#include <connpool.hpp>
#include <connpool/sqlite.hpp>

#include <iostream>

int main() {
    namespace sqlite = connpool::sqlite;
    connpool::Pool pool{sqlite::Factory{"app.db"}, connpool::PoolOptions{.max_size = 4}};
    pool.acquire()->exec("CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, body TEXT)");

    connpool::JobRunner runner{pool}; // each running job holds one lease
    connpool::JobHandle backup = runner.submit(
        sqlite::backup_to("app-backup.db", {.overwrite = true}),
        [](const connpool::Progress& p) { // throttled; never two at once for one job
            std::cout << to_string(p.state) << ' ' << p.done << '/' << p.total << ' ' << p.unit << '\n';
        });
    if (backup.wait() != connpool::JobState::succeeded) {
        std::cerr << "backup failed: " << backup.error() << '\n';
        return 1;
    }
}
