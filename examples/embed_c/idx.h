/* Minimal readers for MNIST's IDX files (big-endian headers, uint8 payload). */
#ifndef IDX_H
#define IDX_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint32_t idx_be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Reads images as floats in [0, 1]; returns the count or -1. *pixels is malloc'ed. */
static long idx_read_images(const char *path, float **pixels) {
    FILE *f = fopen(path, "rb");
    unsigned char head[16];
    if (!f || fread(head, 1, 16, f) != 16 || idx_be32(head) != 2051) { if (f) fclose(f); return -1; }
    long n = idx_be32(head + 4), size = (long)idx_be32(head + 8) * idx_be32(head + 12);
    unsigned char *raw = malloc((size_t)(n * size));
    *pixels = malloc(sizeof(float) * (size_t)(n * size));
    if (!raw || !*pixels || fread(raw, 1, (size_t)(n * size), f) != (size_t)(n * size)) {
        fclose(f); free(raw); return -1;
    }
    for (long i = 0; i < n * size; i++) (*pixels)[i] = raw[i] / 255.0f;
    free(raw);
    fclose(f);
    return n;
}

/* Reads labels as int64 class indices; returns the count or -1. */
static long idx_read_labels(const char *path, int64_t **labels) {
    FILE *f = fopen(path, "rb");
    unsigned char head[8];
    if (!f || fread(head, 1, 8, f) != 8 || idx_be32(head) != 2049) { if (f) fclose(f); return -1; }
    long n = idx_be32(head + 4);
    unsigned char *raw = malloc((size_t)n);
    *labels = malloc(sizeof(int64_t) * (size_t)n);
    if (!raw || !*labels || fread(raw, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(raw); return -1; }
    for (long i = 0; i < n; i++) (*labels)[i] = raw[i];
    free(raw);
    fclose(f);
    return n;
}

static void *aligned_buffer(size_t bytes) {     /* 64-byte aligned, size rounded up */
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}
#endif
