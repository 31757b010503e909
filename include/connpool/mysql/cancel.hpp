#pragma once

// Cancelling a blocking statement: Connector/C's calls block the thread that runs them, so a
// stop request is acted on from beside it. CancelOnStop, wrapped around a statement, watches
// the stop signal on a thread of its own and, when it fires, kills the statement on the server
// with `KILL QUERY <thread id>` sent over a second connection the factory opens for the purpose.
// The statement then ends within a round trip, and the connection is ready for the next one.
// A killed statement usually fails with ER_QUERY_INTERRUPTED (1317, errc::query_interrupted),
// but some end early without an error (DO SLEEP(n); SLEEP() on MySQL returns 1): after the
// statement, look at fired() or the stop signal, not only at whether it threw.
//
// Design: the guard and its watcher share one mutex and an `armed` flag. The destructor clears
// `armed` under the mutex before the guarded connection can run anything else; the watcher sends
// the KILL only while holding the mutex with `armed` still set, and waits for the server to
// acknowledge it before letting go. So a KILL reaches the server either while the guarded
// statement runs (it is interrupted), or after it ended but before the next statement was sent:
// the server then marks an idle session, and it clears that mark when its next command starts
// (MariaDB and MySQL both), so the kill never reaches the NEXT statement. The thread id is read
// when the guard is made; it is the session's for as long as the connection lives
// (mysql_reset_connection keeps it, and auto-reconnect is off, so it never silently changes).
//
// When the KILL cannot be delivered (the second connection fails: server overloaded, max
// connections reached), the watcher shuts the guarded connection's socket down instead: the
// statement's call then returns CR_SERVER_LOST at once and the connection is dead, so reset()
// and validate() retire it; it is never reused mid-statement. Either way the stop is acted on
// within about a second of the request (connect time plus one round trip).

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>

#include <sys/socket.h> // shutdown: the last resort when no KILL can be sent

#include <mysql.h>

#include "../jobs.hpp" // ProgressReporter
#include "connection.hpp"
#include "factory.hpp"

namespace connpool::mysql {

/// How often CancelOnStop looks at a polled stop signal (a predicate or a ProgressReporter).
inline constexpr std::chrono::milliseconds cancel_poll_interval{50};

/// While alive, kills `connection`'s running statement on the server when a stop is requested.
/// Wrap it around one blocking statement (or a streaming read) on the thread that runs it:
///
///     mysql::CancelOnStop guard{factory, conn, reporter};
///     conn.exec("INSERT INTO t SELECT ...");   // throws Error 1317 if the job was cancelled
///
/// Not movable; one thread uses it. Its destructor returns only once no KILL can still be sent.
class CancelOnStop {
public:
    /// Watches `stop`, a predicate the guard's own thread calls every cancel_poll_interval; it
    /// must be safe to call from another thread.
    CancelOnStop(const Factory& factory, Connection& connection, std::function<bool()> stop)
        : factory_(factory), mysql_(connection.handle()), thread_id_(connection.thread_id()) {
        watcher_ = std::thread([this, stop = std::move(stop)] { watch_polled(stop); });
    }

    /// Watches `reporter`'s job for a cancel (ProgressReporter::stop_pending).
    CancelOnStop(const Factory& factory, Connection& connection, ProgressReporter& reporter)
        : CancelOnStop(factory, connection, [&reporter] { return reporter.stop_pending(); }) {}

    /// Watches `token`: a stop request wakes the watcher at once (no polling).
    CancelOnStop(const Factory& factory, Connection& connection, std::stop_token token)
        : factory_(factory), mysql_(connection.handle()), thread_id_(connection.thread_id()) {
        watcher_ = std::thread([this, token = std::move(token)] { watch_token(token); });
    }

    CancelOnStop(const CancelOnStop&) = delete;
    CancelOnStop& operator=(const CancelOnStop&) = delete;

    /// Disarms the guard (no KILL is sent from now on; one being sent is waited for) and joins the watcher.
    ~CancelOnStop() {
        {
            std::lock_guard lock(mu_);
            armed_ = false;
        }
        cv_.notify_all();
        watcher_.join();
    }

    /// Returns whether the guard acted on a stop: KILL QUERY acknowledged by the server, or the
    /// socket shut down (see killed_by_shutdown()). Thread-safe.
    [[nodiscard]] bool fired() const {
        std::lock_guard lock(mu_);
        return fired_;
    }

    /// Returns whether the KILL could not be sent and the connection's socket was shut down
    /// instead (the connection is then dead). Thread-safe.
    [[nodiscard]] bool killed_by_shutdown() const {
        std::lock_guard lock(mu_);
        return shut_down_;
    }

    /// Returns the last reason a KILL could not be sent ("" when none failed). Thread-safe.
    [[nodiscard]] std::string error() const {
        std::lock_guard lock(mu_);
        return error_;
    }

private:
    void watch_polled(const std::function<bool()>& stop) {
        std::unique_lock lock(mu_);
        while (armed_) {
            if (stop()) return cancel(lock);
            cv_.wait_for(lock, cancel_poll_interval, [this] { return !armed_; });
        }
    }

    void watch_token(const std::stop_token& token) {
        // Made before the mutex is taken: it runs at once, on this thread, if a stop was already
        // requested. Taking the mutex orders its notify after the watcher's check of the token,
        // so the wake-up cannot fall between that check and the wait.
        std::stop_callback wake(token, [this] {
            { std::lock_guard l(mu_); }
            cv_.notify_all();
        });
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return !armed_ || token.stop_requested(); });
        if (armed_) cancel(lock);
    }

    /// Called with `lock` held and the guard armed: kills the statement, or shuts the socket.
    void cancel(std::unique_lock<std::mutex>& lock) {
        lock.unlock();
        std::optional<Connection> killer;
        std::string why;
        try {
            killer.emplace(factory_.create()); // connecting takes a while: not under the mutex
        } catch (const std::exception& e) {
            why = e.what();
        }
        lock.lock();
        if (!armed_) return; // the statement ended meanwhile: nothing to kill
        if (killer) {
            try {
                killer->exec("KILL QUERY " + std::to_string(thread_id_));
                fired_ = true;
                return;
            } catch (const std::exception& e) {
                why = e.what();
            }
        }
        error_ = "cancelling the statement of session " + std::to_string(thread_id_) + " on " + factory_.where() +
                 " with KILL QUERY failed, so its connection was shut down: " + factory_.scrub(why);
        const my_socket fd = mysql_get_socket(mysql_);
        if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
        fired_ = true;
        shut_down_ = true;
    }

    const Factory& factory_;
    MYSQL* mysql_;
    unsigned long thread_id_;

    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool armed_ = true;       // guarded by mu_
    bool fired_ = false;      // guarded by mu_
    bool shut_down_ = false;  // guarded by mu_
    std::string error_;       // guarded by mu_
    std::thread watcher_;     // started last: the members above exist before it runs
};

} // namespace connpool::mysql
