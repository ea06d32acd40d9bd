/*
 * guestscope's instruction counter: a QEMU TCG plugin that counts how many times each
 * guest instruction at a kernel address runs, and at QEMU's exit writes one line per
 * instruction that ran, "ADDRESS COUNT DISASSEMBLY" (address in hex), to the file
 * given as `out=PATH`. `cargo xtask bench --exact-counts` builds it, boots the guest
 * with it and sums the counts per kernel function (xtask/src/instruction_counts.rs).
 *
 * Counting is exact: an inline add per instruction, in the translated code, with no
 * sampling and nothing the host's load can move. User-space addresses are not counted.
 *
 * The declarations below are the part of QEMU's plugin API (include/qemu/qemu-plugin.h,
 * API version 1, QEMU 5.2 to 8.x) this plugin calls; QEMU's header is not packaged.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
struct qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t, void *);
extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, qemu_plugin_vcpu_tb_trans_cb_t);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
extern uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *);
extern char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *);
extern void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *,
                                                       enum qemu_plugin_op, void *, uint64_t);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, qemu_plugin_udata_cb_t, void *);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* The lowest kernel address on x86-64 (the kernel half of the address space). */
#define KERNEL_START 0xffff800000000000ull
/* Counters are kept in chunks that never move: translated code holds their addresses. */
#define CHUNK 65536

struct counter {
    uint64_t vaddr;
    uint64_t count;
    char *disas;
};

static struct counter **chunks;
static size_t chunk_count, used;
static const char *out_path;

/* A new counter, or NULL when memory runs out (that instruction is then not counted). */
static struct counter *new_counter(void)
{
    if (used % CHUNK == 0) {
        struct counter **grown = realloc(chunks, sizeof(*chunks) * (chunk_count + 1));
        if (!grown)
            return NULL;
        chunks = grown;
        chunks[chunk_count] = calloc(CHUNK, sizeof(struct counter));
        if (!chunks[chunk_count])
            return NULL;
        chunk_count++;
    }
    struct counter *c = &chunks[used / CHUNK][used % CHUNK];
    used++;
    return c;
}

/* Each translation of a block: a counter per kernel instruction, bumped inline. A block
 * translated again gets new counters; the lines are summed per address afterwards. */
static void on_translation(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t vaddr = qemu_plugin_insn_vaddr(insn);
        if (vaddr < KERNEL_START)
            continue;
        struct counter *c = new_counter();
        if (!c)
            return;
        c->vaddr = vaddr;
        c->disas = qemu_plugin_insn_disas(insn);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                   &c->count, 1);
    }
}

static void write_counts(qemu_plugin_id_t id, void *unused)
{
    FILE *out = fopen(out_path, "w");
    if (!out) {
        perror(out_path);
        return;
    }
    for (size_t i = 0; i < used; i++) {
        const struct counter *c = &chunks[i / CHUNK][i % CHUNK];
        if (c->count)
            fprintf(out, "%llx %llu %s\n", (unsigned long long)c->vaddr,
                    (unsigned long long)c->count, c->disas ? c->disas : "?");
    }
    fclose(out);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const struct qemu_info_t *info,
                                                               int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "out=", 4) == 0)
            out_path = argv[i] + 4;
    if (!out_path) {
        fprintf(stderr, "insn_count: no out=PATH given\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translation);
    qemu_plugin_register_atexit_cb(id, write_counts, NULL);
    return 0;
}
