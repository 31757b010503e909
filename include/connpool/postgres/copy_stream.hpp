#pragma once

// COPY over libpq's asynchronous API: the job's thread waits on the server's socket in short
// slices and looks at its stop flag between them, so a stop request cancels the running command
// on the server (PQcancel) at once instead of after the table is done. What a failed or
// cancelled job leaves is put right here too: a COPY still running is cancelled and drained,
// an open transaction rolled back, so the lease goes back idle, or (when that fails) the
// connection is reported unusable and discarded.

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <string>

#include <poll.h>

#include <libpq-fe.h>

#include "../io/durable_file.hpp" // io::Error
#include "../jobs.hpp"
#include "error.hpp"

namespace connpool::postgres::detail {

/// How often a waiting job looks at its stop flag: a stop is acted on within this slice.
inline constexpr int stop_poll_ms = 100;

/// How long a cancel request may take to be delivered (libpq 17's cancel API only: PQcancel has
/// no bound of its own).
inline constexpr std::chrono::seconds cancel_timeout{5};

/// Asks the server to cancel what `conn` is running (a no-op when nothing is). Returns false when
/// the cancel request could not be sent.
inline bool send_cancel(PGconn* conn) noexcept {
#ifdef LIBPQ_HAS_ASYNC_CANCEL
    // libpq 17+: the request goes over a connection made like `conn` (its TLS and GSS settings,
    // which PQcancel ignores), polled here so it is bounded by cancel_timeout. Not exercised by
    // the suite: Debian 12's libpq is 15, which takes the PQcancel branch.
    PGcancelConn* cancel = PQcancelCreate(conn);
    if (cancel == nullptr) return false;
    struct Finish {
        PGcancelConn* c;
        ~Finish() { PQcancelFinish(c); }
    } finish{cancel};
    if (PQcancelStatus(cancel) == CONNECTION_BAD || PQcancelStart(cancel) == 0) return false;
    const auto deadline = std::chrono::steady_clock::now() + cancel_timeout;
    for (;;) {
        const PostgresPollingStatusType status = PQcancelPoll(cancel);
        if (status == PGRES_POLLING_OK) return true;
        if (status == PGRES_POLLING_FAILED) return false;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        pollfd pfd{PQcancelSocket(cancel), static_cast<short>(status == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
        if (pfd.fd < 0) return false;
        if (::poll(&pfd, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) return false;
    }
#else
    CancelPtr cancel(PQgetCancel(conn));
    if (!cancel) return false;
    char message[256];
    return PQcancel(cancel.get(), message, sizeof message) == 1;
#endif
}

/// Waits until `conn`'s socket is ready for `events` (POLLIN / POLLOUT), in slices of
/// stop_poll_ms; returns false as soon as `stop()` is true. Throws Error if the socket fails.
inline bool wait_socket(PGconn* conn, short events, const std::function<bool()>& stop, const std::string& what) {
    for (;;) {
        if (stop()) return false;
        pollfd pfd{PQsocket(conn), events, 0};
        if (pfd.fd < 0) throw Error(what + ": the connection has no socket (" + where(conn) + ")", "08006");
        const int n = ::poll(&pfd, 1, stop_poll_ms);
        if (n > 0) return true;
        if (n < 0 && errno != EINTR) throw Error(what + ": poll failed on " + where(conn), "08006");
    }
}

/// Reads and drops every result of the command in flight, blocking; returns the first error's
/// result status message ("" when none failed).
inline std::string drain_results(PGconn* conn) {
    std::string first_error;
    for (;;) {
        ResultPtr r(PQgetResult(conn));
        if (!r) break;
        const auto status = PQresultStatus(r.get());
        if (status == PGRES_COPY_OUT) { // a cancelled COPY TO: read out what is still in flight
            char* buffer = nullptr;
            while (PQgetCopyData(conn, &buffer, 0) > 0) PQfreemem(buffer);
            continue;
        }
        if (status == PGRES_COPY_IN) { // nobody ended the COPY FROM: end it with an error
            PQputCopyEnd(conn, "connpool: the operation ended before its data");
            continue;
        }
        if (first_error.empty() && status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
            first_error = trimmed(PQresultErrorMessage(r.get()));
        if (PQstatus(conn) != CONNECTION_OK) break;
    }
    return first_error;
}

/// Brings `conn` back to idle after a failure or a cancel: a command in flight is cancelled and
/// drained, an open transaction rolled back, blocking mode restored. Returns whether the
/// connection is now idle and healthy (else the caller must let it be discarded).
inline bool settle(PGconn* conn) noexcept {
    try {
        if (PQstatus(conn) != CONNECTION_OK) return false;
        PQsetnonblocking(conn, 0);
        if (PQtransactionStatus(conn) == PQTRANS_ACTIVE) {
            send_cancel(conn);
            drain_results(conn);
        }
        const auto s = PQtransactionStatus(conn);
        if (s == PQTRANS_INTRANS || s == PQTRANS_INERROR) {
            ResultPtr r(PQexec(conn, "ROLLBACK"));
            if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) return false;
        }
        return PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE;
    } catch (...) {
        return false;
    }
}

/// After a stop: brings the connection back to idle (settle), or throws Error when it cannot, so
/// the runner discards it instead of pooling a connection in an unknown state.
inline void settle_or_throw(PGconn* conn, const std::string& what) {
    if (!settle(conn))
        throw Error(what + " was cancelled and its connection could not be brought back to idle: " +
                        trimmed(PQerrorMessage(conn)),
                    "");
}

/// Runs `body` and puts the connection right if it throws: a connection that settle() brings back
/// to idle is kept (OperationError), one it cannot is discarded (the error is rethrown as Error).
template <class Body>
void run_settled(PGconn* conn, const std::string& what, Body&& body) {
    auto fail = [&](const std::string& message, const std::string& sqlstate) {
        if (settle(conn)) throw OperationError(message);
        // A lost link's libpq message is already in `message` (it is what failed): say so once.
        if (PQstatus(conn) == CONNECTION_BAD)
            throw Error(message + " (the connection to the server is lost: it is discarded)", sqlstate);
        throw Error(message + " (the connection is discarded: " + trimmed(PQerrorMessage(conn)) + ")",
                    sqlstate);
    };
    try {
        body();
    } catch (const OperationError& e) {
        fail(e.what(), "");
    } catch (const Error& e) {
        if (e.sqlstate() == "55P03")
            fail(what + ": the table is locked by another session (lock_not_available; set lock_timeout to wait): " +
                     e.what(),
                 e.sqlstate());
        fail(what + ": " + e.what(), e.sqlstate());
    } catch (const io::Error& e) {
        fail(what + ": " + e.what(), "");
    } catch (const std::exception& e) {
        fail(what + ": " + e.what(), "");
    }
}

/// Waits for the first result of the command just sent, acting on a stop (cancel); returns it, or
/// nothing when stopped (the connection then still has the command in flight: settle() it).
inline ResultPtr first_result(PGconn* conn, ProgressReporter& reporter, const std::string& what) {
    const auto stop = [&] { return reporter.stop_requested(); };
    while (PQisBusy(conn) != 0) {
        if (!wait_socket(conn, POLLIN, stop, what)) return nullptr;
        if (PQconsumeInput(conn) == 0) throw_result(conn, nullptr, what);
    }
    return ResultPtr(PQgetResult(conn));
}

} // namespace connpool::postgres::detail
