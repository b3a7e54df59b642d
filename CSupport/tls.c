// TLS through the system's OpenSSL (libssl3). Why a shim: OpenSSL's
// headers are full of macros (SSL_CTX_set_min_proto_version, SSL_set_mode,
// BIO_get_ktls_send) that Swift cannot call, and keeping <openssl/ssl.h> out
// of the public header keeps it out of every Swift module. Policy (which
// versions, what to verify) is set here once so that the node and the
// clients cannot drift apart; everything else is a direct wrapper.
//
// Sessions use OpenSSL's socket BIO on the caller's non-blocking socket
// (docs/security.md says why), so reads and writes return the
// AEGIS_TLS_WANT_* codes where a plain socket would return EAGAIN.
#define _GNU_SOURCE
#include "CSupport.h"
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

const int AEGIS_TLS_WANT_READ = -1;
const int AEGIS_TLS_WANT_WRITE = -2;
const int AEGIS_TLS_CLOSED = -3;
const int AEGIS_TLS_FAILED = -4;

// The first OpenSSL error of this thread's queue as text, and the queue
// cleared (it is per thread, and a stale entry would be blamed on the next call).
static void take_error(char *error, size_t error_len, const char *what, const char *file) {
    unsigned long code = ERR_get_error();
    char reason[256] = "unknown error";
    if (code != 0) ERR_error_string_n(code, reason, sizeof reason);
    ERR_clear_error();
    if (error == NULL || error_len == 0) return;
    if (file != NULL) {
        snprintf(error, error_len, "%s %s: %s", what, file, reason);
    } else {
        snprintf(error, error_len, "%s: %s", what, reason);
    }
}

// Settings both ends share: TLS 1.2 or newer, no renegotiation (a client
// could otherwise make the server redo the expensive half of a handshake
// at will), writes that may stop part-way (non-blocking sockets), and
// buffers given back while a connection is idle.
// Starts every context from a clean OpenSSL error queue, so a failure is
// reported with its own reason and not one left by an earlier call.
static SSL_CTX *new_context(const SSL_METHOD *method, int kernel_offload, char *error, size_t error_len) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (ctx == NULL) {
        take_error(error, error_len, "cannot create a TLS context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    uint64_t options = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION;
    if (kernel_offload) options |= SSL_OP_ENABLE_KTLS;
    SSL_CTX_set_options(ctx, options);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

static int load_identity(SSL_CTX *ctx, const char *cert_file, const char *key_file, char *error, size_t error_len) {
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        take_error(error, error_len, "cannot load the certificate chain from", cert_file);
        return 0;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        take_error(error, error_len, "cannot load the private key from", key_file);
        return 0;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        take_error(error, error_len, "the private key does not match the certificate: key", key_file);
        return 0;
    }
    return 1;
}

// Mutual authentication: trust ca_file, name its CAs in the certificate
// request, and refuse a handshake whose peer shows no certificate it signed.
static int require_certificates_from(SSL_CTX *ctx, const char *ca_file, char *error, size_t error_len) {
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        take_error(error, error_len, "cannot load the CA certificates from", ca_file);
        return 0;
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
    if (names == NULL) {
        take_error(error, error_len, "no CA certificate names in", ca_file);
        return 0;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    return 1;
}

aegis_tls_context *aegis_tls_server_context_create(const char *cert_file, const char *key_file, const char *ca_file,
                                                   int kernel_offload, char *error, size_t error_len) {
    SSL_CTX *ctx = new_context(TLS_server_method(), kernel_offload, error, error_len);
    if (ctx == NULL) return NULL;
    // A record is otherwise read in two recv calls (its 5-byte header, then
    // its body); read-ahead takes what the socket holds in one. Readers must
    // then ask aegis_tls_has_pending, not aegis_tls_pending: bytes read ahead
    // and not yet decrypted are invisible to SSL_pending.
    SSL_CTX_set_read_ahead(ctx, 1);
    if (!load_identity(ctx, cert_file, key_file, error, error_len)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    // Resumed sessions must stay tied to this service (OpenSSL refuses to
    // resume a verified session without an id context).
    static const unsigned char session_context[] = "aegiskv";
    SSL_CTX_set_session_id_context(ctx, session_context, sizeof session_context - 1);
    if (ca_file != NULL && ca_file[0] != '\0' && !require_certificates_from(ctx, ca_file, error, error_len)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return (aegis_tls_context *)ctx;
}

aegis_tls_context *aegis_tls_client_context_create(const char *ca_file, const char *cert_file, const char *key_file,
                                                   char *error, size_t error_len) {
    SSL_CTX *ctx = new_context(TLS_client_method(), 0, error, error_len);
    if (ctx == NULL) return NULL;
    int loaded = (ca_file != NULL && ca_file[0] != '\0') ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                                                         : SSL_CTX_set_default_verify_paths(ctx);
    if (loaded != 1) {
        take_error(error, error_len, "cannot load the CA certificates from", ca_file ? ca_file : "the system store");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (cert_file != NULL && cert_file[0] != '\0') {
        if (!load_identity(ctx, cert_file, key_file ? key_file : cert_file, error, error_len)) {
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    return (aegis_tls_context *)ctx;
}

// Both ends of a link between nodes come from this one context: a node
// accepts its peers' connections and dials its own, and on both each side
// presents its certificate and requires one the cluster CA signed. No host
// name is checked (peers are dialled by whichever address gossip learned);
// the cluster CA's signature is what makes a node a member. No session
// tickets: links live for hours and are never resumed, and a ticket would be
// one more record the dialling side, which otherwise only writes, has to read.
aegis_tls_context *aegis_tls_peer_context_create(const char *cert_file, const char *key_file, const char *ca_file,
                                                 char *error, size_t error_len) {
    SSL_CTX *ctx = new_context(TLS_method(), 0, error, error_len);
    if (ctx == NULL) return NULL;
    if (!load_identity(ctx, cert_file, key_file, error, error_len)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (!require_certificates_from(ctx, ca_file, error, error_len)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    return (aegis_tls_context *)ctx;
}

void aegis_tls_context_free(aegis_tls_context *context) {
    SSL_CTX_free((SSL_CTX *)context);
}

int aegis_tls_certificate_not_after(aegis_tls_context *context, char *text, size_t text_len) {
    if (text_len > 0) text[0] = '\0';
    X509 *certificate = SSL_CTX_get0_certificate((SSL_CTX *)context);
    if (certificate == NULL) return -1;
    const ASN1_TIME *not_after = X509_get0_notAfter(certificate);
    BIO *printed = BIO_new(BIO_s_mem());
    if (printed != NULL) {
        if (ASN1_TIME_print(printed, not_after) == 1 && text_len > 1) {
            int length = BIO_read(printed, text, (int)(text_len - 1));
            text[length > 0 ? length : 0] = '\0';
        }
        BIO_free(printed);
    }
    // -1: not_after is before now. 0 is an unreadable time, not counted as expired.
    return X509_cmp_current_time(not_after) < 0 ? 1 : 0;
}

aegis_tls_session *aegis_tls_session_create(aegis_tls_context *context, int fd, int is_server, const char *host) {
    ERR_clear_error();
    SSL *ssl = SSL_new((SSL_CTX *)context);
    if (ssl == NULL) {
        ERR_clear_error();
        return NULL;
    }
    if (SSL_set_fd(ssl, fd) != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    if (is_server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        if (host != NULL && host[0] != '\0') {
            // The name checked against the server's certificate (DNS name or IP address).
            X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
            if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1) {
                ERR_clear_error();
                X509_VERIFY_PARAM_set1_host(param, host, 0);
                SSL_set_tlsext_host_name(ssl, host);
            }
        }
    }
    return (aegis_tls_session *)ssl;
}

void aegis_tls_session_free(aegis_tls_session *session) {
    SSL_free((SSL *)session);
}

// SSL_get_error's answer as one of the AEGIS_TLS_* codes.
static int outcome(SSL *ssl, int result) {
    int code = SSL_get_error(ssl, result);
    switch (code) {
    case SSL_ERROR_WANT_READ:
        return AEGIS_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return AEGIS_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return AEGIS_TLS_CLOSED;
    case SSL_ERROR_SYSCALL:
        // EOF without close_notify, or a socket error: either way the peer is gone.
        if (errno == EINTR) return AEGIS_TLS_WANT_READ;
        ERR_clear_error();
        return AEGIS_TLS_CLOSED;
    default:
        return AEGIS_TLS_FAILED;
    }
}

int aegis_tls_handshake(aegis_tls_session *session) {
    SSL *ssl = (SSL *)session;
    ERR_clear_error();
    int result = SSL_do_handshake(ssl);
    return result == 1 ? 0 : outcome(ssl, result);
}

int aegis_tls_read(aegis_tls_session *session, void *buf, int len) {
    SSL *ssl = (SSL *)session;
    ERR_clear_error();
    int result = SSL_read(ssl, buf, len);
    return result > 0 ? result : outcome(ssl, result);
}

int aegis_tls_write(aegis_tls_session *session, const void *buf, int len) {
    SSL *ssl = (SSL *)session;
    ERR_clear_error();
    int result = SSL_write(ssl, buf, len);
    return result > 0 ? result : outcome(ssl, result);
}

int aegis_tls_pending(aegis_tls_session *session) {
    return SSL_pending((SSL *)session);
}

int aegis_tls_has_pending(aegis_tls_session *session) {
    return SSL_has_pending((SSL *)session);
}

int aegis_tls_shutdown(aegis_tls_session *session) {
    SSL *ssl = (SSL *)session;
    ERR_clear_error();
    int result = SSL_shutdown(ssl);
    ERR_clear_error();
    return result;
}

const int AEGIS_TLS_REASON_PEER_SENT_NO_CERTIFICATE = SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE;
// OpenSSL 3 reports a peer that closed mid-record as this error, not as
// SSL_ERROR_SYSCALL: a client that gave up, not one that broke the protocol.
const int AEGIS_TLS_REASON_UNEXPECTED_EOF = SSL_R_UNEXPECTED_EOF_WHILE_READING;

int aegis_tls_last_error(char *buf, size_t len) {
    int reason = ERR_GET_REASON(ERR_peek_error());
    take_error(buf, len, "TLS", NULL);
    return reason;
}

const char *aegis_tls_version(aegis_tls_session *session) {
    return SSL_get_version((SSL *)session);
}

long aegis_tls_verify_result(aegis_tls_session *session) {
    return SSL_get_verify_result((SSL *)session);
}

const long AEGIS_TLS_VERIFY_EXPIRED = X509_V_ERR_CERT_HAS_EXPIRED;
const long AEGIS_TLS_VERIFY_NOT_YET_VALID = X509_V_ERR_CERT_NOT_YET_VALID;

const char *aegis_tls_verify_text(long result) {
    return X509_verify_cert_error_string(result);
}

int aegis_tls_kernel_offloaded(aegis_tls_session *session) {
    SSL *ssl = (SSL *)session;
    int sending = BIO_get_ktls_send(SSL_get_wbio(ssl)) ? 1 : 0;
    int receiving = BIO_get_ktls_recv(SSL_get_rbio(ssl)) ? 2 : 0;
    return sending | receiving;
}

const char *aegis_tls_library_version(void) {
    return OpenSSL_version(OPENSSL_VERSION);
}
