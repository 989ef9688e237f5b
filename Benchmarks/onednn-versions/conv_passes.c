/* Times oneDNN's 3x3 convolution passes at the story U-Net's shapes, to compare oneDNN versions.
 *
 * Builds against oneDNN 2.x (op descriptors) or 3.x (primitive descriptors created directly),
 * chosen by DNNL_VERSION_MAJOR. For each shape and precision it creates forward-training,
 * backward-data and backward-weights primitives with format "any" (oneDNN picks the layouts),
 * allocates memory in those layouts (so no reorder is timed), runs a warm-up and then times N
 * executions of each pass, and prints the median as GFLOP/s plus one JSON line per pass.
 *
 *   cc -O2 conv_passes.c -ldnnl -o conv_passes            (Debian's 2.6 headers)
 *   cc -O2 -I<3.x include> conv_passes.c -L<3.x lib> -ldnnl -o conv_passes3
 *   OMP_NUM_THREADS=2 ./conv_passes -n 5 -p f32,bf16 -t tag
 *
 * Precisions: f32: every tensor f32. bf16: src, weights, dst, diff_src and diff_dst bf16; bias,
 * diff_bias and diff_weights f32 (what CryLab keeps as master weights). With -o f32 the outputs
 * dst and diff_src are f32 instead, and with -l nhwc the activations are NHWC rather than "any"
 * (the two together: CryLab's own bf16 mode). -i picks shapes by index, -s passes by name.
 */
#include <dnnl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(call)                                                                          \
    do {                                                                                     \
        dnnl_status_t s_ = (call);                                                           \
        if (s_ != dnnl_success) {                                                            \
            fprintf(stderr, "%s:%d: %s failed with status %d\n", __FILE__, __LINE__, #call,  \
                    (int)s_);                                                                \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

/* ---- the two APIs behind one small interface ---------------------------------------- */

#if DNNL_VERSION_MAJOR >= 3
typedef dnnl_memory_desc_t md_t; /* an opaque handle in 3.x */
#define MD(m) (m)
static md_t md_make(int ndims, const dnnl_dims_t dims, dnnl_data_type_t type,
                    dnnl_format_tag_t tag) {
    md_t m;
    CHECK(dnnl_memory_desc_create_with_tag(&m, ndims, dims, type, tag));
    return m;
}
static void md_free(md_t m) { dnnl_memory_desc_destroy(m); }
typedef const_dnnl_memory_desc_t queried_md_t;
#else
typedef dnnl_memory_desc_t md_t; /* a plain struct in 2.x */
#define MD(m) (&(m))
static md_t md_make(int ndims, const dnnl_dims_t dims, dnnl_data_type_t type,
                    dnnl_format_tag_t tag) {
    md_t m;
    CHECK(dnnl_memory_desc_init_by_tag(&m, ndims, dims, type, tag));
    return m;
}
static void md_free(md_t m) { (void)m; }
typedef const dnnl_memory_desc_t *queried_md_t;
#endif

enum pass { FWD, BWD_DATA, BWD_WEIGHTS };
static const char *pass_name[] = {"fwd", "bwd_data", "bwd_weights"};

struct conv_mds {
    md_t src, weights, bias, dst; /* for the backward passes: diff_src, diff_weights, ... */
};

/* Returns dnnl_unimplemented (and *pd untouched) where the library has no kernel. */
static dnnl_status_t create_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t engine, enum pass p,
                               struct conv_mds *m, const dnnl_dims_t strides,
                               const dnnl_dims_t pad, const_dnnl_primitive_desc_t hint,
                               const_dnnl_primitive_attr_t attr) {
    const dnnl_alg_kind_t alg = dnnl_convolution_direct;
#if DNNL_VERSION_MAJOR >= 3
    switch (p) {
    case FWD:
        return dnnl_convolution_forward_primitive_desc_create(
            pd, engine, dnnl_forward_training, alg, m->src, m->weights, m->bias, m->dst, strides,
            NULL, pad, pad, attr);
    case BWD_DATA:
        return dnnl_convolution_backward_data_primitive_desc_create(
            pd, engine, alg, m->src, m->weights, m->dst, strides, NULL, pad, pad, hint, attr);
    default:
        return dnnl_convolution_backward_weights_primitive_desc_create(
            pd, engine, alg, m->src, m->weights, m->bias, m->dst, strides, NULL, pad, pad, hint,
            attr);
    }
#else
    dnnl_convolution_desc_t d;
    switch (p) {
    case FWD:
        CHECK(dnnl_convolution_forward_desc_init(&d, dnnl_forward_training, alg, &m->src,
                                                 &m->weights, &m->bias, &m->dst, strides, pad,
                                                 pad));
        break;
    case BWD_DATA:
        CHECK(dnnl_convolution_backward_data_desc_init(&d, alg, &m->src, &m->weights, &m->dst,
                                                       strides, pad, pad));
        break;
    default:
        CHECK(dnnl_convolution_backward_weights_desc_init(&d, alg, &m->src, &m->weights,
                                                          &m->bias, &m->dst, strides, pad, pad));
        break;
    }
    return dnnl_primitive_desc_create(pd, &d, attr, engine, hint);
#endif
}

/* ---- memory ----------------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float next_uniform(void) { /* xorshift64*, in [-0.5, 0.5) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (float)((rng_state * 0x2545F4914F6CDD1Dull) >> 40) / (float)(1 << 24) - 0.5f;
}

static dnnl_memory_t alloc_filled(dnnl_engine_t engine, queried_md_t md, dnnl_data_type_t type) {
    dnnl_memory_t mem;
    CHECK(dnnl_memory_create(&mem, md, engine, DNNL_MEMORY_ALLOCATE));
    size_t bytes = dnnl_memory_desc_get_size(md);
    void *data = NULL;
    CHECK(dnnl_memory_get_data_handle(mem, &data));
    if (type == dnnl_bf16) {
        uint16_t *h = data;
        for (size_t i = 0; i < bytes / 2; i++) {
            float f = next_uniform();
            uint32_t u;
            memcpy(&u, &f, 4);
            h[i] = (uint16_t)(u >> 16);
        }
    } else if (type == dnnl_f32) {
        float *f = data;
        for (size_t i = 0; i < bytes / 4; i++) f[i] = next_uniform();
    } else {
        memset(data, 0, bytes);
    }
    return mem;
}

/* ---- timing ----------------------------------------------------------------------- */

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct shape {
    int ic, oc, hw;
};

/* The story U-Net's 3x3 convolutions (128x128x1 input, widths 32-64-128-256, bottleneck 512):
 * encoder, bottleneck, then the decoder's first convolution of each level (concatenated input). */
static const struct shape shapes[] = {
    {1, 32, 128},   {32, 32, 128},  {32, 64, 64},   {64, 64, 64},   {64, 128, 32},
    {128, 128, 32}, {128, 256, 16}, {256, 256, 16}, {256, 512, 8},  {512, 512, 8},
    {512, 256, 16}, {256, 128, 32}, {128, 64, 64},  {64, 32, 128},
};

struct options {
    int runs, warmup, batch, f32_outputs, nhwc;
    const char *precisions, *tag, *only, *shape_list; /* shape_list: indices, e.g. "0,3" */
};

static void time_shape(dnnl_engine_t engine, dnnl_stream_t stream, const struct options *o,
                       const struct shape *s, int bf16, const char *version) {
    const dnnl_data_type_t op = bf16 ? dnnl_bf16 : dnnl_f32;
    const dnnl_data_type_t out = (bf16 && !o->f32_outputs) ? dnnl_bf16 : dnnl_f32;
    char precision[32];
    snprintf(precision, sizeof precision, "%s%s%s", bf16 ? "bf16" : "f32",
             bf16 && o->f32_outputs ? "-f32out" : "", o->nhwc ? "-nhwc" : "");
    dnnl_dims_t src_dims = {o->batch, s->ic, s->hw, s->hw};
    dnnl_dims_t dst_dims = {o->batch, s->oc, s->hw, s->hw};
    dnnl_dims_t w_dims = {s->oc, s->ic, 3, 3};
    dnnl_dims_t b_dims = {s->oc};
    dnnl_dims_t strides = {1, 1}, pad = {1, 1};

    dnnl_primitive_attr_t attr;
    CHECK(dnnl_primitive_attr_create(&attr));
    CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));

    /* Per pass: the data types of (src, weights, bias, dst) in that pass's own roles. */
    const dnnl_data_type_t types[3][4] = {
        {op, op, dnnl_f32, out},       /* fwd: src, weights, bias, dst */
        {out, op, dnnl_f32, op},       /* bwd_data: diff_src, weights, -, diff_dst */
        {op, dnnl_f32, dnnl_f32, op},  /* bwd_weights: src, diff_weights, diff_bias, diff_dst */
    };
    dnnl_primitive_desc_t fwd_pd = NULL;
    for (int p = FWD; p <= BWD_WEIGHTS; p++) {
        /* The forward primitive descriptor is always made: the backward passes need it as a hint. */
        const int timed = !o->only || strstr(o->only, pass_name[p]) != NULL;
        if (!timed && p != FWD) continue;
        const dnnl_format_tag_t act = o->nhwc ? dnnl_nhwc : dnnl_format_tag_any, any = dnnl_format_tag_any;
        struct conv_mds m = {md_make(4, src_dims, types[p][0], act), md_make(4, w_dims, types[p][1], any),
                             md_make(1, b_dims, types[p][2], any), md_make(4, dst_dims, types[p][3], act)};
        dnnl_primitive_desc_t pd = NULL;
        dnnl_status_t st = create_pd(&pd, engine, p, &m, strides, pad, fwd_pd, attr);
        md_free(m.src); md_free(m.weights); md_free(m.bias); md_free(m.dst);
        if (p == FWD && st == dnnl_success) fwd_pd = pd;
        if (!timed && st == dnnl_success) continue;
        if (st != dnnl_success) {
            printf("%-16s %-12s %3d->%-3d@%-3d unimplemented (status %d)\n", precision,
                   pass_name[p], s->ic, s->oc, s->hw, (int)st);
            printf("{\"tag\":\"%s\",\"version\":\"%s\",\"precision\":\"%s\",\"pass\":\"%s\","
                   "\"ic\":%d,\"oc\":%d,\"hw\":%d,\"batch\":%d,\"impl\":null,\"median_ms\":null}\n",
                   o->tag, version, precision, pass_name[p], s->ic, s->oc, s->hw, o->batch);
            if (p == FWD) break; /* the backward passes need the forward hint */
            continue;
        }
        const char *impl = "?";
        CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));

        /* Arguments in the layouts the kernel chose. */
        int nargs = 0;
        dnnl_exec_arg_t args[5];
        struct { int arg; dnnl_query_t what; int index; dnnl_data_type_t type; } wanted[3][4] = {
            {{DNNL_ARG_SRC, dnnl_query_src_md, 0, op},
             {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, op},
             {DNNL_ARG_BIAS, dnnl_query_weights_md, 1, dnnl_f32},
             {DNNL_ARG_DST, dnnl_query_dst_md, 0, out}},
            {{DNNL_ARG_DIFF_SRC, dnnl_query_diff_src_md, 0, out},
             {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, op},
             {DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, op},
             {0, 0, -1, 0}},
            {{DNNL_ARG_SRC, dnnl_query_src_md, 0, op},
             {DNNL_ARG_DIFF_WEIGHTS, dnnl_query_diff_weights_md, 0, dnnl_f32},
             {DNNL_ARG_DIFF_BIAS, dnnl_query_diff_weights_md, 1, dnnl_f32},
             {DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, op}},
        };
        for (int i = 0; i < 4; i++) {
            if (wanted[p][i].index < 0) continue;
            queried_md_t md = dnnl_primitive_desc_query_md(pd, wanted[p][i].what, wanted[p][i].index);
            args[nargs].arg = wanted[p][i].arg;
            args[nargs].memory = alloc_filled(engine, md, wanted[p][i].type);
            nargs++;
        }
        queried_md_t scratch_md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        if (scratch_md && dnnl_memory_desc_get_size(scratch_md) > 0) {
            args[nargs].arg = DNNL_ARG_SCRATCHPAD;
            args[nargs].memory = alloc_filled(engine, scratch_md, dnnl_data_type_undef);
            nargs++;
        }

        dnnl_primitive_t prim;
        CHECK(dnnl_primitive_create(&prim, pd));
        for (int i = 0; i < o->warmup; i++) {
            CHECK(dnnl_primitive_execute(prim, stream, nargs, args));
            CHECK(dnnl_stream_wait(stream));
        }
        double *ms = malloc(sizeof(double) * o->runs);
        for (int i = 0; i < o->runs; i++) {
            double t0 = now_ms();
            CHECK(dnnl_primitive_execute(prim, stream, nargs, args));
            CHECK(dnnl_stream_wait(stream));
            ms[i] = now_ms() - t0;
        }
        qsort(ms, o->runs, sizeof(double), by_value);
        double median = o->runs % 2 ? ms[o->runs / 2] : 0.5 * (ms[o->runs / 2 - 1] + ms[o->runs / 2]);
        double flops = 2.0 * o->batch * s->oc * s->hw * s->hw * s->ic * 9.0;
        double gflops = flops / (median * 1e6);
        printf("%-16s %-12s %3d->%-3d@%-3d %9.2f ms %7.1f GFLOP/s  %s\n", precision, pass_name[p],
               s->ic, s->oc, s->hw, median, gflops, impl);
        printf("{\"tag\":\"%s\",\"version\":\"%s\",\"precision\":\"%s\",\"pass\":\"%s\","
               "\"ic\":%d,\"oc\":%d,\"hw\":%d,\"batch\":%d,\"impl\":\"%s\",\"runs\":%d,"
               "\"median_ms\":%.4f,\"min_ms\":%.4f,\"max_ms\":%.4f,\"gflops\":%.2f}\n",
               o->tag, version, precision, pass_name[p], s->ic, s->oc, s->hw, o->batch, impl,
               o->runs, median, ms[0], ms[o->runs - 1], gflops);
        fflush(stdout);
        free(ms);
        CHECK(dnnl_primitive_destroy(prim));
        for (int i = 0; i < nargs; i++) CHECK(dnnl_memory_destroy(args[i].memory));
        if (p != FWD) CHECK(dnnl_primitive_desc_destroy(pd));
    }
    if (fwd_pd) CHECK(dnnl_primitive_desc_destroy(fwd_pd));
    CHECK(dnnl_primitive_attr_destroy(attr));
}

static int wanted_shape(const char *list, int index) {
    if (!list) return 1;
    for (const char *c = list; *c;) {
        char *end;
        long n = strtol(c, &end, 10);
        if (end == c) return 0;
        if (n == index) return 1;
        c = *end == ',' ? end + 1 : end;
    }
    return 0;
}

static void usage(const char *me) {
    fprintf(stderr,
            "usage: %s [-n runs] [-w warmup] [-b batch] [-p f32,bf16] [-o f32] [-l any|nhwc]\n"
            "          [-t tag]\n"
            "          [-s pass[,pass]]   (fwd, bwd_data, bwd_weights; default all)\n"
            "          [-i index[,index]] (shapes by index in the list, from 0; default all)\n", me);
    exit(2);
}

int main(int argc, char **argv) {
    struct options o = {5, 1, 32, 0, 0, "f32,bf16", "", NULL, NULL};
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage(argv[0]);
        const char *v = argv[++i];
        switch (argv[i - 1][1]) {
        case 'n': o.runs = atoi(v); break;
        case 'w': o.warmup = atoi(v); break;
        case 'b': o.batch = atoi(v); break;
        case 'p': o.precisions = v; break;
        case 'o': o.f32_outputs = strcmp(v, "f32") == 0; break;
        case 'l': o.nhwc = strcmp(v, "nhwc") == 0; break;
        case 't': o.tag = v; break;
        case 's': o.only = v; break;
        case 'i': o.shape_list = v; break;
        default: usage(argv[0]);
        }
    }
    if (o.runs < 1) usage(argv[0]);

    const dnnl_version_t *v = dnnl_version();
    char version[32];
    snprintf(version, sizeof version, "%d.%d.%d", v->major, v->minor, v->patch);
    const char *runtime = v->cpu_runtime == DNNL_RUNTIME_OMP    ? "OpenMP"
                          : v->cpu_runtime == DNNL_RUNTIME_TBB  ? "TBB"
                          : v->cpu_runtime == DNNL_RUNTIME_SEQ  ? "sequential"
                          : v->cpu_runtime == DNNL_RUNTIME_SYCL ? "SYCL"
                                                                : "other";
    printf("# oneDNN %s (commit %s, built against headers %d.%d), CPU runtime %s, ISA %d, "
           "batch %d, %d runs after %d warm-up\n",
           version, v->hash, DNNL_VERSION_MAJOR, DNNL_VERSION_MINOR, runtime,
           (int)dnnl_get_effective_cpu_isa(), o.batch, o.runs, o.warmup);
    if (v->major != DNNL_VERSION_MAJOR) {
        fprintf(stderr, "library major version %d differs from the headers' %d\n", v->major,
                DNNL_VERSION_MAJOR);
        return 1;
    }

    dnnl_engine_t engine;
    dnnl_stream_t stream;
    CHECK(dnnl_engine_create(&engine, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));
    for (int bf16 = 0; bf16 <= 1; bf16++) {
        if (!strstr(o.precisions, bf16 ? "bf16" : "f32")) continue;
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            if (wanted_shape(o.shape_list, (int)i))
                time_shape(engine, stream, &o, &shapes[i], bf16, version);
    }
    CHECK(dnnl_stream_destroy(stream));
    CHECK(dnnl_engine_destroy(engine));
    return 0;
}
