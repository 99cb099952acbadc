/* Classify the held-out MNIST digits (8,000-9,999) with the AOT-compiled LeNet-5.
   No Python, no LLVM: liblenet.so needs libc and libm only.
       ./classify t10k-images-idx3-ubyte t10k-labels-idx1-ubyte */
#include <stdio.h>
#include <stdlib.h>
#include "idx.h"
#include "lenet.h"

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s IMAGES LABELS\n", argv[0]); return 2; }
    float *images = NULL; int64_t *labels = NULL;
    long n = idx_read_images(argv[1], &images), m = idx_read_labels(argv[2], &labels);
    if (n < 10000 || m != n) { fprintf(stderr, "cannot read the MNIST files\n"); return 2; }
    const long batch = LENET_INPUT_0_SHAPE[0], classes = LENET_OUTPUT_0_SIZE / batch;
    void *workspace = aligned_buffer(LENET_WORKSPACE_SIZE);
    float *scores = malloc(sizeof(float) * LENET_OUTPUT_0_SIZE);
    long correct = 0, seen = 0;
    for (long start = 8000; start + batch <= 10000; start += batch) {
        const float *inputs[] = {images + start * 784};
        float *outputs[] = {scores};
        int code = lenet_run(inputs, outputs, workspace);
        if (code) { fprintf(stderr, "lenet_run: %s\n", lenet_error_string(code)); return 1; }
        for (long i = 0; i < batch; i++) {
            long best = 0;
            for (long c = 1; c < classes; c++)
                if (scores[i * classes + c] > scores[i * classes + best]) best = c;
            if (start == 8000 && i < 20) printf("%ld%s", best, i == 19 ? "  (first 20 predictions)\n" : " ");
            correct += best == labels[start + i];
            seen++;
        }
    }
    printf("held-out accuracy: %.2f%% on %ld digits\n", 100.0 * correct / seen, seen);
    /* bad arguments get an error code, never a crash */
    const float *none[] = {NULL};
    printf("NULL input -> %d (%s)\n", lenet_run(none, NULL, workspace), lenet_error_string(1));
    free(workspace); free(scores); free(images); free(labels);
    return 0;
}
