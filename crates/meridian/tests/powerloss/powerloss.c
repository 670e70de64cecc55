/*
 * Power-loss emulation for one process, loaded with LD_PRELOAD.
 *
 * SIGKILL leaves the page cache intact, so a kill -9 test passes even when a
 * program never calls fsync. This library makes a "crash" lose what a power
 * cut would: for every regular file the process writes, it remembers the
 * file's size at its last fsync/fdatasync and the old bytes of any region
 * overwritten since. When the file named by MERIDIAN_POWERLOSS_TRIGGER
 * appears, it puts every such file back as of its last sync (old bytes
 * restored, size truncated) and kills the process with SIGKILL.
 *
 * Approximations, stated: a file's content when the process first writes it
 * counts as synced; renames and directory syncs are not tracked (a renamed
 * file is restored under its old name only if that name still exists);
 * writes through mmap are not seen.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct undo {
    off_t offset;
    size_t length;
    char *old;
    struct undo *next; /* older entries follow */
};

struct tracked {
    dev_t dev;
    ino_t ino;
    char path[PATH_MAX];
    off_t synced_size;
    struct undo *undo;
    struct tracked *next;
};

static struct tracked *files;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static ssize_t (*real_pread64)(int, void *, size_t, off_t);

static void resolve(void) {
    if (real_write) return;
    real_pread64 = dlsym(RTLD_NEXT, "pread64");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_write = dlsym(RTLD_NEXT, "write");
}

/* The record of fd's file, made on first sight (lock held). NULL if fd is
 * not a regular file. */
static struct tracked *record_of(int fd, struct stat *st) {
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) return NULL;
    for (struct tracked *t = files; t; t = t->next)
        if (t->dev == st->st_dev && t->ino == st->st_ino) return t;
    struct tracked *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->dev = st->st_dev;
    t->ino = st->st_ino;
    t->synced_size = st->st_size;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, t->path, sizeof t->path - 1);
    t->path[n > 0 ? n : 0] = 0;
    t->next = files;
    files = t;
    return t;
}

/* Before writing `length` bytes at `offset`: keep the old bytes of the part
 * that lies inside the synced size. */
static void before_write(int fd, struct tracked *t, off_t offset, size_t length) {
    if (offset >= t->synced_size || length == 0) return;
    size_t keep = (size_t)(t->synced_size - offset);
    if (keep > length) keep = length;
    struct undo *u = malloc(sizeof *u);
    if (!u) return;
    u->old = malloc(keep);
    if (!u->old) { free(u); return; }
    ssize_t got = real_pread64(fd, u->old, keep, offset);
    u->offset = offset;
    u->length = got > 0 ? (size_t)got : 0;
    u->next = t->undo;
    t->undo = u;
}

static size_t iov_length(const struct iovec *iov, int count) {
    size_t total = 0;
    for (int i = 0; i < count; i++) total += iov[i].iov_len;
    return total;
}

static off_t current_offset(int fd, const struct stat *st) {
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && (flags & O_APPEND)) return st->st_size;
    return lseek(fd, 0, SEEK_CUR);
}

ssize_t write(int fd, const void *buffer, size_t length) {
    resolve();
    struct stat st;
    pthread_mutex_lock(&lock);
    struct tracked *t = record_of(fd, &st);
    if (!t) {
        pthread_mutex_unlock(&lock);
        return real_write(fd, buffer, length);
    }
    before_write(fd, t, current_offset(fd, &st), length);
    ssize_t result = real_write(fd, buffer, length);
    pthread_mutex_unlock(&lock);
    return result;
}

ssize_t pwrite64(int fd, const void *buffer, size_t length, off_t offset) {
    resolve();
    struct stat st;
    pthread_mutex_lock(&lock);
    struct tracked *t = record_of(fd, &st);
    if (t) before_write(fd, t, offset, length);
    ssize_t result = real_pwrite64(fd, buffer, length, offset);
    pthread_mutex_unlock(&lock);
    return result;
}

ssize_t pwrite(int fd, const void *buffer, size_t length, off_t offset) {
    return pwrite64(fd, buffer, length, offset);
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
    resolve();
    struct stat st;
    pthread_mutex_lock(&lock);
    struct tracked *t = record_of(fd, &st);
    if (!t) {
        pthread_mutex_unlock(&lock);
        return real_writev(fd, iov, count);
    }
    before_write(fd, t, current_offset(fd, &st), iov_length(iov, count));
    ssize_t result = real_writev(fd, iov, count);
    pthread_mutex_unlock(&lock);
    return result;
}

ssize_t pwritev(int fd, const struct iovec *iov, int count, off_t offset) {
    resolve();
    struct stat st;
    pthread_mutex_lock(&lock);
    struct tracked *t = record_of(fd, &st);
    if (t) before_write(fd, t, offset, iov_length(iov, count));
    ssize_t result = real_pwritev(fd, iov, count, offset);
    pthread_mutex_unlock(&lock);
    return result;
}

static void synced(int fd) {
    struct stat st;
    pthread_mutex_lock(&lock);
    struct tracked *t = record_of(fd, &st);
    if (t) {
        t->synced_size = st.st_size;
        while (t->undo) {
            struct undo *u = t->undo;
            t->undo = u->next;
            free(u->old);
            free(u);
        }
    }
    pthread_mutex_unlock(&lock);
}

int fsync(int fd) {
    resolve();
    int result = real_fsync(fd);
    if (result == 0) synced(fd);
    return result;
}

int fdatasync(int fd) {
    resolve();
    int result = real_fdatasync(fd);
    if (result == 0) synced(fd);
    return result;
}

/* The power cut: every tracked file back as of its last sync, then SIGKILL.
 * The lock is never released, so no other thread writes meanwhile. */
static void power_cut(void) {
    pthread_mutex_lock(&lock);
    for (struct tracked *t = files; t; t = t->next) {
        if (!t->path[0]) continue;
        int fd = open(t->path, O_WRONLY);
        if (fd < 0) continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && st.st_dev == t->dev && st.st_ino == t->ino) {
            for (struct undo *u = t->undo; u; u = u->next)
                real_pwrite64(fd, u->old, u->length, u->offset);
            if (ftruncate(fd, t->synced_size) != 0) { /* nothing more to do */ }
        }
        close(fd);
    }
    kill(getpid(), SIGKILL);
}

static void *watch_trigger(void *arg) {
    const char *trigger = arg;
    struct timespec pause = {0, 5 * 1000 * 1000};
    for (;;) {
        if (access(trigger, F_OK) == 0) power_cut();
        nanosleep(&pause, NULL);
    }
    return NULL;
}

__attribute__((constructor)) static void start(void) {
    resolve();
    const char *trigger = getenv("MERIDIAN_POWERLOSS_TRIGGER");
    if (!trigger || !*trigger) return;
    pthread_t thread;
    pthread_create(&thread, NULL, watch_trigger, strdup(trigger));
    pthread_detach(thread);
}
