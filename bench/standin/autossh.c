/*
 * A stand-in for autossh + ssh, for benchmarks and tests of the tunnel worker at
 * a scale no real sshd on one machine can serve (bench/scale.py --standin,
 * tests/test_worker_scale.py). Built by bench/standin/build.py; selected with
 * TUNNELSITE_AUTOSSH=<path of the built binary>, whose file name is "autossh".
 *
 * To the worker it looks like autossh running ssh:
 *   - this process (comm "autossh", from the file name) forks one child, which
 *     renames itself "ssh" (prctl PR_SET_NAME); both keep the environment they
 *     were started with, so the worker's marker variables stay in /proc/<pid>/environ;
 *   - an -L forward: the child listens on the forward's local address and port
 *     (from argv, as tunnels/ssh.py builds it), accepts and closes connections;
 *     a port in use fails as ssh does with ExitOnForwardFailure (same words, exit 255);
 *   - an -R forward: the child writes ssh's "Authenticated to" line and sleeps;
 *   - SIGTERM ends both; the parent exits when its child does, with its status.
 * Nothing is connected anywhere: no sshd is needed. No stdio buffering, no heap,
 * so a pair costs a few hundred KB (statically linked).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t child_pid = 0;

static void say(const char *format, ...) {
    char line[512];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(line, sizeof line, format, args);
    va_end(args);
    if (n > 0)
        (void)!write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

struct forward {
    char flag; /* 'L', 'R' or 0 */
    char bind[256];
    int port;
};

/* Split "[bind:]port:host:hostport" (bind may be "[v6]") of an -L spec into bind and port. */
static int parse_local(const char *spec, struct forward *fw) {
    const char *rest = spec;
    fw->bind[0] = 0;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof fw->bind)
            return -1;
        memcpy(fw->bind, spec + 1, close - spec - 1);
        fw->bind[close - spec - 1] = 0;
        rest = close + 2;
    } else {
        int colons = 0;
        for (const char *p = spec; *p; p++)
            colons += *p == ':';
        if (colons >= 3) { /* bind:port:host:hostport */
            const char *colon = strchr(spec, ':');
            if ((size_t)(colon - spec) >= sizeof fw->bind)
                return -1;
            memcpy(fw->bind, spec, colon - spec);
            fw->bind[colon - spec] = 0;
            rest = colon + 1;
        }
    }
    char *end;
    long port = strtol(rest, &end, 10);
    if (end == rest || *end != ':' || port < 0 || port > 65535)
        return -1;
    fw->port = (int)port;
    return 0;
}

/* The last -L/-R of argv (ssh options before "--" only), and the destination after it. */
static const char *parse_args(int argc, char **argv, struct forward *fw, const char **host_name, int *ssh_port) {
    const char *destination = "localhost";
    fw->flag = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            if (i + 1 < argc)
                destination = argv[i + 1];
            break;
        }
        if ((!strcmp(argv[i], "-L") || !strcmp(argv[i], "-R")) && i + 1 < argc) {
            fw->flag = argv[i][1];
            if (fw->flag == 'L' && parse_local(argv[i + 1], fw)) {
                say("Bad local forwarding specification '%s'\n", argv[i + 1]);
                exit(255);
            }
            i++;
        } else if (!strcmp(argv[i], "-p") && i + 1 < argc) {
            *ssh_port = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-o") && i + 1 < argc) {
            if (!strncmp(argv[i + 1], "HostName=", 9))
                *host_name = argv[i + 1] + 9;
            i++;
        } else if (argv[i][0] == '-' && strchr("MFipoLRDEIbceilmsw", argv[i][1]) && argv[i][2] == 0) {
            i++; /* an option with a value we do not use */
        }
    }
    const char *at = strrchr(destination, '@');
    return at ? at + 1 : destination;
}

/* Listen as ssh's -L does: "localhost" and an empty bind are loopback, "*" every address. */
static int listen_on(const struct forward *fw) {
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = htons(fw->port)};
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons(fw->port)};
    const char *bind_to = fw->bind[0] && strcmp(fw->bind, "localhost") ? fw->bind : "127.0.0.1";
    int family = AF_INET;
    if (!strcmp(bind_to, "*") || !strcmp(bind_to, "0.0.0.0"))
        v4.sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, bind_to, &v4.sin_addr) != 1) {
        if (inet_pton(AF_INET6, bind_to, &v6.sin6_addr) != 1)
            return -1;
        family = AF_INET6;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    int bound = family == AF_INET ? bind(fd, (struct sockaddr *)&v4, sizeof v4)
                                  : bind(fd, (struct sockaddr *)&v6, sizeof v6);
    if (bound || listen(fd, 128)) {
        say("bind [%s]:%d: %s\r\n", bind_to, fw->port, strerror(errno));
        say("channel_setup_fwd_listener_tcpip: cannot listen to port: %d\r\n", fw->port);
        say("Could not request local forwarding.\r\n");
        close(fd);
        return -1;
    }
    say("Local forwarding listening on %s port %d.\r\n", bind_to, fw->port);
    return fd;
}

static void run_ssh(int argc, char **argv) {
    prctl(PR_SET_NAME, "ssh", 0, 0, 0);
    struct forward fw;
    const char *host_name = NULL;
    int ssh_port = 22;
    const char *host = parse_args(argc, argv, &fw, &host_name, &ssh_port);
    if (host_name)
        host = host_name;
    say("Authenticated to %s ([%s]:%d) using \"publickey\".\r\n", host, host, ssh_port);
    if (fw.flag != 'L')
        for (;;)
            pause();
    int fd = listen_on(&fw);
    if (fd < 0)
        exit(255);
    for (;;) { /* connections are accepted and closed: nothing is forwarded */
        int conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        if (conn >= 0)
            close(conn);
    }
}

static void forward_term(int sig) {
    if (child_pid > 0)
        kill(child_pid, sig);
    else
        _exit(128 + sig);
}

int main(int argc, char **argv) {
    struct sigaction action = {.sa_handler = forward_term};
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    /* Held until child_pid is set, so a SIGTERM in between still reaches the child. */
    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGINT);
    sigprocmask(SIG_BLOCK, &term, &old);
    pid_t pid = fork();
    if (pid < 0) {
        say("autossh: fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        sigprocmask(SIG_SETMASK, &old, NULL);
        run_ssh(argc, argv);
        _exit(0);
    }
    child_pid = pid;
    sigprocmask(SIG_SETMASK, &old, NULL);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 1;
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
