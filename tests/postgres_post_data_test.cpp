// The parts of backup_database / restore_database that run beside each other for speed: the
// post-data schema cut into pieces that build indexes on several connections at once, and the
// schema dump that runs while the tables are copied (its failure must still fail the set).

#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>
#include <connpool/postgres.hpp>

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "pg_fixtures.hpp"

namespace {

namespace fs = std::filesystem;
namespace pg = connpool::postgres;
using connpool::JobState;
using connpool::testing::PgPool;
using connpool::testing::PgRunner;
using connpool::testing::PgTest;
using connpool::testing::pg_pool_options;

// The shape of pg_dump 15's plain post-data output, with the SET lines it puts between objects.
constexpr const char* post_data_sql = R"(--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

SET default_tablespace = '';

--
-- Name: a a_pkey; Type: CONSTRAINT; Schema: public; Owner: me
--

ALTER TABLE ONLY public.a
    ADD CONSTRAINT a_pkey PRIMARY KEY (id);


SET default_tablespace = fast;

--
-- Name: b_note; Type: INDEX; Schema: public; Owner: me; Tablespace: fast
--

CREATE INDEX b_note ON public.b USING btree (note);


SET default_tablespace = '';

--
-- Name: b b_a_fkey; Type: FK CONSTRAINT; Schema: public; Owner: me
--

ALTER TABLE ONLY public.b
    ADD CONSTRAINT b_a_fkey FOREIGN KEY (a) REFERENCES public.a(id);


--
-- Name: Type: INDEX; odd; Type: TRIGGER; Schema: public; Owner: me
--

CREATE TRIGGER "Type: INDEX; odd" AFTER INSERT ON public.b FOR EACH ROW EXECUTE FUNCTION public.f();


--
-- PostgreSQL database dump complete
--
)";

TEST(PostgresPostData, is_cut_at_each_object_with_the_set_state_before_it) {
    const auto post = pg::detail::split_post_data(post_data_sql);
    EXPECT_NE(post.preamble.find("set_config('search_path', '', false)"), std::string::npos);
    EXPECT_EQ(post.preamble.find("-- Name:"), std::string::npos);
    ASSERT_EQ(post.pieces.size(), 4u);
    EXPECT_EQ(post.pieces[0].type, "CONSTRAINT");
    EXPECT_EQ(post.pieces[1].type, "INDEX");
    EXPECT_EQ(post.pieces[2].type, "FK CONSTRAINT");
    EXPECT_EQ(post.pieces[3].type, "TRIGGER") << "the type is read from the end: a name cannot fake it";
    EXPECT_TRUE(pg::detail::runs_in_parallel(post.pieces[0]));
    EXPECT_TRUE(pg::detail::runs_in_parallel(post.pieces[1]));
    EXPECT_FALSE(pg::detail::runs_in_parallel(post.pieces[2]));
    EXPECT_FALSE(pg::detail::runs_in_parallel(post.pieces[3]));
    // Each piece runs after the tablespace its place in the script had, wherever it runs.
    const auto last_tablespace = [](const std::string& sql) {
        const auto at = sql.rfind("SET default_tablespace = ", sql.find("-- Name:"));
        return sql.substr(at, sql.find('\n', at) - at);
    };
    EXPECT_EQ(last_tablespace(post.pieces[0].sql), "SET default_tablespace = '';");
    EXPECT_EQ(last_tablespace(post.pieces[1].sql), "SET default_tablespace = fast;");
    EXPECT_EQ(last_tablespace(post.pieces[2].sql), "SET default_tablespace = '';");
    EXPECT_NE(post.pieces[1].sql.find("CREATE INDEX b_note"), std::string::npos);
    EXPECT_EQ(post.pieces[1].sql.find("FOREIGN KEY"), std::string::npos);
}

TEST(PostgresPostData, without_objects_is_all_preamble) {
    const auto post = pg::detail::split_post_data("SET statement_timeout = 0;\n");
    EXPECT_TRUE(post.pieces.empty());
    EXPECT_EQ(post.preamble, "SET statement_timeout = 0;\n");
}

TEST(PostgresPostData, each_index_and_key_goes_to_the_one_table_it_names_and_the_rest_waits) {
    const auto post = pg::detail::split_post_data(post_data_sql);
    const auto by_table = pg::detail::split_by_table(post, {"public.a", "public.b"});
    ASSERT_EQ(by_table.per_table.size(), 2u);
    ASSERT_EQ(by_table.per_table[0].size(), 1u);
    EXPECT_EQ(by_table.per_table[0][0], &post.pieces[0]); // a_pkey
    ASSERT_EQ(by_table.per_table[1].size(), 1u);
    EXPECT_EQ(by_table.per_table[1][0], &post.pieces[1]); // b_note; the foreign key and trigger are no one's
    EXPECT_TRUE(by_table.unassigned.empty());
    // A table not in the set claims nothing; its pieces wait for all the data.
    const auto only_a = pg::detail::split_by_table(post, {"public.a"});
    EXPECT_EQ(only_a.per_table[0].size(), 1u);
    ASSERT_EQ(only_a.unassigned.size(), 1u);
    EXPECT_EQ(only_a.unassigned[0], &post.pieces[1]);
    // Text that could name two tables is no one's either.
    pg::detail::PostData odd;
    odd.pieces.push_back({"INDEX", "CREATE INDEX x ON public.a USING btree ((' ON public.b USING '))"});
    const auto two = pg::detail::split_by_table(odd, {"public.a", "public.b"});
    EXPECT_TRUE(two.per_table[0].empty());
    EXPECT_TRUE(two.per_table[1].empty());
    EXPECT_EQ(two.unassigned.size(), 1u);
}

/// Backs up this test's database into a set and restores it into new databases, cleaning both up.
class PostgresParallelSchema : public PgTest {
protected:
    void TearDown() override {
        for (const auto& t : targets_) server().psql("DROP DATABASE IF EXISTS " + t + " WITH (FORCE)");
        for (const auto& d : dirs_) fs::remove_all(d);
        PgTest::TearDown();
    }

    /// Returns a new set of this database, backed up through a pool of 3; fails the test if it fails.
    fs::path back_up(const std::string& name) {
        const fs::path dir = fs::temp_directory_path() / ("connpool-" + name + "-" + db_);
        fs::remove_all(dir);
        dirs_.push_back(dir);
        PgPool pool(factory(), pg_pool_options(3));
        PgRunner runner(pool);
        auto backup = pg::backup_database(runner, dir);
        EXPECT_EQ(backup.wait(), JobState::succeeded) << backup.error();
        if (!backup.tables().empty()) first_table_ = backup.tables().front().progress().name;
        return dir;
    }

    /// Creates an empty database named after this test's and returns its conninfo.
    std::string new_target(const std::string& suffix) {
        targets_.push_back(db_ + suffix);
        EXPECT_EQ(server().psql("CREATE DATABASE " + targets_.back()), 0);
        return server().conninfo(targets_.back());
    }

    /// Expects every connection of `pool` (of 3) to have the default search_path: none that ran
    /// pg_dump's session SETs (search_path = '') was pooled again.
    static void expect_no_session_sets(PgPool& pool) {
        std::vector<connpool::Lease<pg::Connection>> all;
        for (std::size_t i = 0; i < 3; ++i) {
            all.push_back(pool.acquire());
            EXPECT_EQ(all.back()->query_value("SHOW search_path"), "\"$user\", public") << "lease " << i;
        }
    }

    std::string first_table_; // the largest table of the last back_up(), which loads first
    std::vector<std::string> targets_;
    std::vector<fs::path> dirs_;
};

TEST_F(PostgresParallelSchema, a_restore_builds_many_indexes_on_several_connections_and_keeps_the_foreign_keys) {
    pg::Connection c = direct();
    c.exec("CREATE TABLE a (id int PRIMARY KEY, v text UNIQUE)");
    c.exec("CREATE TABLE b (id int PRIMARY KEY, a int REFERENCES a, note text)");
    for (int i = 0; i < 6; ++i) c.exec("CREATE INDEX b_note_" + std::to_string(i) + " ON b (note, id) WHERE id % 6 = " + std::to_string(i));
    c.exec("INSERT INTO a SELECT i, 'v' || i FROM generate_series(1, 300) i");
    c.exec("INSERT INTO b SELECT i, 1 + i % 300, 'n' || i FROM generate_series(1, 3000) i");
    const fs::path dir = back_up("post-data");
    {
        PgPool pool(pg::Factory(new_target("_r")), pg_pool_options(3));
        PgRunner runner(pool);
        auto restore = pg::restore_database(runner, dir);
        ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
        pg::Connection t = pg::Factory(server().conninfo(targets_.back())).create();
        EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'"), "9"); // 2 pkeys, 1 unique, 6
        EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_constraint WHERE contype = 'f'"), "1");
        EXPECT_THROW(t.exec("INSERT INTO b VALUES (99999, 4242, 'x')"), pg::Error);
        expect_no_session_sets(pool);
    }
}

TEST_F(PostgresParallelSchema, a_schema_dump_that_fails_while_the_tables_are_copied_fails_the_set) {
    pg::Connection c = direct();
    c.exec("CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a SELECT generate_series(1, 1000)");
    const fs::path dir = fs::temp_directory_path() / ("connpool-schema-fail-" + db_);
    fs::remove_all(dir);
    fs::create_directories(dir);
    // Answers --version as pg_dump 15 does, and fails every dump.
    const fs::path fake = dir / "fake_pg_dump";
    std::ofstream(fake) << "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'pg_dump (PostgreSQL) 15.99'; exit 0; }\n"
                           "echo 'fake pg_dump: no schema today' >&2; exit 3\n";
    ::chmod(fake.c_str(), 0755);
    PgPool pool(factory(), pg_pool_options(3));
    PgRunner runner(pool);
    pg::DatabaseBackupOptions options;
    options.pg_dump = fake;
    auto backup = pg::backup_database(runner, dir / "set", options);
    EXPECT_EQ(backup.wait(), JobState::failed);
    EXPECT_NE(backup.error().find("no schema today"), std::string::npos) << backup.error();
    EXPECT_FALSE(fs::exists(dir / "set" / "manifest.json"));
    fs::remove_all(dir);
}

TEST_F(PostgresParallelSchema, a_tables_indexes_are_built_while_another_table_is_still_loading) {
    // slow's CHECK waits (up to 10 s, then fails its row) until small's primary key exists: the
    // restore succeeds only if small's index is built while slow is still loading. slow is the
    // larger table, so it starts first.
    pg::Connection c = direct();
    c.exec("CREATE FUNCTION public.small_indexed() RETURNS bool LANGUAGE plpgsql VOLATILE AS $$ BEGIN "
           "FOR i IN 1..1000 LOOP IF EXISTS (SELECT 1 FROM pg_catalog.pg_indexes WHERE schemaname = 'public' AND "
           "indexname = 'small_pkey') THEN RETURN true; END IF; PERFORM pg_catalog.pg_sleep(0.01); END LOOP; "
           "RETURN false; END $$");
    c.exec("CREATE TABLE small (id int PRIMARY KEY); INSERT INTO small SELECT generate_series(1, 10)");
    c.exec("CREATE TABLE slow (id int, pad text, CHECK (public.small_indexed()))");
    c.exec("INSERT INTO slow SELECT i, repeat('x', 1000) FROM generate_series(1, 2000) i");
    const fs::path dir = back_up("early-index");
    ASSERT_EQ(first_table_, pg::Table{"slow"}.display()) << "slow must load first";
    PgPool pool(pg::Factory(new_target("_r")), pg_pool_options(3));
    PgRunner runner(pool);
    auto restore = pg::restore_database(runner, dir);
    EXPECT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    pg::Connection t = pg::Factory(server().conninfo(targets_.back())).create();
    EXPECT_EQ(t.query_value("SELECT count(*) FROM slow"), "2000");
    EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_indexes WHERE indexname = 'small_pkey'"), "1");
    expect_no_session_sets(pool); // the index job ended with RESET ALL before its connection was pooled
}

TEST_F(PostgresParallelSchema, a_failing_index_fails_the_set_naming_it_and_drops_what_it_created_but_nothing_else) {
    pg::Connection c = direct();
    c.exec("CREATE TABLE a (id int PRIMARY KEY, note text); INSERT INTO a SELECT i, 'n' || i FROM generate_series(1, 500) i");
    c.exec("CREATE INDEX a_note ON a (note)");
    const fs::path dir = back_up("failing-index");
    const std::string target = new_target("_f");
    // A relation named like the index makes its CREATE INDEX fail in the target.
    pg::Connection t = pg::Factory(target).create();
    t.exec("CREATE TABLE a_note (x int)");
    PgPool pool(pg::Factory(target), pg_pool_options(3));
    PgRunner runner(pool);
    auto restore = pg::restore_database(runner, dir);
    EXPECT_EQ(restore.wait(), JobState::failed);
    const std::string error = restore.error();
    EXPECT_NE(error.find("post-data"), std::string::npos) << error;
    EXPECT_NE(error.find("a_note"), std::string::npos) << error;
    EXPECT_NE(error.find("the database is as it was"), std::string::npos) << error;
    // The set's table went again (its data had committed); the table that was there stays.
    EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_class WHERE relname = 'a'"), "0");
    EXPECT_EQ(t.query_value("SELECT count(*) FROM a_note"), "0");
    EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '#connpool%'"), "0");
    // So the restore runs again once the obstacle is gone.
    t.exec("DROP TABLE a_note");
    auto again = pg::restore_database(runner, dir);
    ASSERT_EQ(again.wait(), JobState::succeeded) << again.error();
    EXPECT_EQ(t.query_value("SELECT count(*) FROM public.a"), "500");
    EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '#connpool%'"), "0");
}

} // namespace
