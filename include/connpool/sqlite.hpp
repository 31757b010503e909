#pragma once

// SQLite adapter, all of it: a pooled Connection owning a sqlite3* and its Factory
// (sqlite/connection.hpp, which is all a program that only pools connections needs), and backup
// and restore jobs built on SQLite's online backup API (sqlite/backup.hpp, sqlite/restore.hpp;
// these bring the job layer and the POSIX durable-file layer, io/). Link connpool::sqlite.

#include "sqlite/backup.hpp"
#include "sqlite/check.hpp"
#include "sqlite/connection.hpp"
#include "sqlite/error.hpp"
#include "sqlite/restore.hpp"
