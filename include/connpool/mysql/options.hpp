#pragma once

// What a mysql::Factory is told: where to connect and as whom (ConnectOptions), and how
// (FactoryOptions: timeouts, TLS, LOAD DATA LOCAL, the SQL that sets up and resets a session).

#include <chrono>
#include <string>

namespace connpool::mysql {

/// Where to connect and as whom. Aggregate: `ConnectOptions{host, port, user, password,
/// database, unix_socket}`.
struct ConnectOptions {
    /// Server host name or address; TCP unless unix_socket is set. Default "127.0.0.1".
    std::string host = "127.0.0.1";
    /// TCP port. Default 3306.
    unsigned int port = 3306;
    /// User name.
    std::string user{};
    /// Password; never printed in errors, events or logs (masked as "***").
    std::string password{};
    /// The default database of every session ("" = none).
    std::string database{};
    /// Unix socket path; when set the connection goes through it and host/port are not used.
    std::string unix_socket{};

    /// Returns "database 'db' on host:port as 'user'" (or "on socket /path"), for messages; never
    /// the password.
    [[nodiscard]] std::string where() const {
        return "database '" + database + "' on " + (unix_socket.empty() ? host + ":" + std::to_string(port) : "socket " + unix_socket) +
               " as '" + user + "'";
    }
};

/// TLS settings, passed to Connector/C as they are (MYSQL_OPT_SSL_*); empty strings are not set.
/// Without any of them the client's default applies (Connector/C 3.3: TLS only if the server
/// asks for it, server certificate not verified).
struct TlsOptions {
    /// Require TLS: connecting fails if it cannot be negotiated (MYSQL_OPT_SSL_ENFORCE). Default false.
    bool enforce = false;
    /// Verify the server's certificate and host name (MYSQL_OPT_SSL_VERIFY_SERVER_CERT). Default false.
    bool verify_server_cert = false;
    /// Client private key file (MYSQL_OPT_SSL_KEY).
    std::string key{};
    /// Client certificate file (MYSQL_OPT_SSL_CERT).
    std::string cert{};
    /// CA certificate file (MYSQL_OPT_SSL_CA).
    std::string ca{};
    /// Directory of CA certificates (MYSQL_OPT_SSL_CAPATH).
    std::string capath{};
    /// Allowed ciphers (MYSQL_OPT_SSL_CIPHER).
    std::string cipher{};
    /// Certificate revocation list file (MYSQL_OPT_SSL_CRL).
    std::string crl{};
};

/// How a Factory opens connections. Every field has a default.
struct FactoryOptions {
    /// How long connecting may take (MYSQL_OPT_CONNECT_TIMEOUT, whole seconds, >= 1). Default 10 s.
    std::chrono::seconds connect_timeout{10};
    /// How long one read from the server may block (MYSQL_OPT_READ_TIMEOUT; 0 = no limit). A
    /// statement that runs longer than this without sending anything fails with CR_SERVER_LOST,
    /// so the default is no limit: backups run long statements. Default 0.
    std::chrono::seconds read_timeout{0};
    /// How long one write to the server may block (MYSQL_OPT_WRITE_TIMEOUT; 0 = no limit). Default 0.
    std::chrono::seconds write_timeout{0};
    /// TLS settings. Default: the client's.
    TlsOptions tls{};
    /// Allow `LOAD DATA LOCAL INFILE` (MYSQL_OPT_LOCAL_INFILE). Default true: table restores stream
    /// their rows through it. It is safe because the client never opens a file the server names:
    /// the adapter's restore installs its own handler (mysql_set_local_infile_handler) that
    /// serves only the stream it is restoring, whatever file name the statement carries, and it
    /// is removed again afterwards; a connection that runs LOAD DATA LOCAL without such a handler
    /// (through handle()) reads the file named in its own statement, as the mysql client does.
    bool local_infile = true;
    /// SQL run once on every new connection (e.g. "SET SESSION sql_mode = 'ANSI_QUOTES'"), and again
    /// after every reset (mysql_reset_connection puts session variables back to the server's
    /// defaults). Default none.
    std::string init_sql{};
    /// SQL run by reset() after mysql_reset_connection (and init_sql). Default none.
    std::string reset_sql{};
    /// reset() calls mysql_reset_connection (rolls back, drops temporary tables, user and session
    /// variables, prepared statements, table locks; one round trip). false: reset() only rolls
    /// back a transaction the lease left open (no round trip when none is), for sessions the
    /// application keeps clean itself. Default true.
    bool reset_connection = true;
};

} // namespace connpool::mysql
