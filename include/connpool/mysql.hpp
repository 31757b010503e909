#pragma once

// connpool::mysql: pooled MySQL/MariaDB connections and table and whole-database backup/restore jobs (MariaDB
// Connector/C; speaks to MySQL and MariaDB servers). Link connpool::mysql.

#include "mysql/cancel.hpp"     // IWYU pragma: export
#include "mysql/connection.hpp" // IWYU pragma: export
#include "mysql/database.hpp"   // IWYU pragma: export
#include "mysql/error.hpp"      // IWYU pragma: export
#include "mysql/factory.hpp"    // IWYU pragma: export
#include "mysql/options.hpp"    // IWYU pragma: export
#include "mysql/table.hpp"          // IWYU pragma: export
#include "mysql/table_backup.hpp"   // IWYU pragma: export
#include "mysql/table_file.hpp"     // IWYU pragma: export
#include "mysql/table_restore.hpp"  // IWYU pragma: export
