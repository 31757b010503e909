#pragma once

// connpool::postgres: pooled PostgreSQL connections (libpq) and table and whole-database backup
// and restore jobs over them. Link connpool::postgres.

#include "postgres/connection.hpp" // IWYU pragma: export
#include "postgres/error.hpp"      // IWYU pragma: export
#include "postgres/table.hpp"          // IWYU pragma: export
#include "postgres/table_backup.hpp"   // IWYU pragma: export
#include "postgres/table_file.hpp"     // IWYU pragma: export
#include "postgres/table_restore.hpp"  // IWYU pragma: export
#include "postgres/database.hpp"       // IWYU pragma: export
