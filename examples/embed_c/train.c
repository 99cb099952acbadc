/* Train an MLP on MNIST digits 0-7,999 with the AOT-compiled training step, judge it
   on 8,000-9,999 and save the weights, all in C.
       ./train t10k-images-idx3-ubyte t10k-labels-idx1-ubyte [EPOCHS] [weights.bin] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "idx.h"
#include "mlp_train.h"

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s IMAGES LABELS [EPOCHS] [OUT]\n", argv[0]); return 2; }
    float *images = NULL; int64_t *labels = NULL;
    long n = idx_read_images(argv[1], &images), m = idx_read_labels(argv[2], &labels);
    int epochs = argc > 3 ? atoi(argv[3]) : 3;
    const char *out = argc > 4 ? argv[4] : "mlp_weights.bin";
    if (n < 10000 || m != n) { fprintf(stderr, "cannot read the MNIST files\n"); return 2; }
    const long batch = MLP_TRAIN_BATCH, pixels = MLP_TRAIN_INPUT_SIZE / MLP_TRAIN_BATCH;
    void *state = aligned_buffer(MLP_TRAIN_STATE_SIZE), *workspace = aligned_buffer(MLP_TRAIN_WORKSPACE_SIZE);
    float *x = aligned_buffer(sizeof(float) * MLP_TRAIN_INPUT_SIZE);
    int64_t *y = aligned_buffer(sizeof(int64_t) * MLP_TRAIN_LABELS_SIZE);
    float *scores = aligned_buffer(sizeof(float) * MLP_TRAIN_OUTPUT_SIZE);
    if (mlp_train_init_state(state)) return 1;
    unsigned seed = 1;
    for (int epoch = 0; epoch < epochs; epoch++) {
        double total = 0;
        long steps = 8000 / batch;
        for (long s = 0; s < steps; s++) {
            for (long i = 0; i < batch; i++) {          /* a random batch of the 8,000 */
                seed = seed * 1103515245u + 12345u;
                long k = (seed >> 8) % 8000;
                memcpy(x + i * pixels, images + k * pixels, sizeof(float) * pixels);
                y[i] = labels[k];
            }
            float loss;
            int code = mlp_train_train_step(state, x, y, 1e-3f, workspace, &loss);
            if (code) { fprintf(stderr, "train_step: %s\n", mlp_train_error_string(code)); return 1; }
            total += loss;
        }
        printf("epoch %d: mean loss %.4f\n", epoch + 1, total / steps);
    }
    long correct = 0, seen = 0;
    for (long start = 8000; start + batch <= 10000; start += batch) {
        int code = mlp_train_run(state, images + start * pixels, scores, workspace);
        if (code) { fprintf(stderr, "run: %s\n", mlp_train_error_string(code)); return 1; }
        for (long i = 0; i < batch; i++) {
            long best = 0;
            for (long c = 1; c < MLP_TRAIN_NUM_CLASSES; c++)
                if (scores[i * MLP_TRAIN_NUM_CLASSES + c] > scores[i * MLP_TRAIN_NUM_CLASSES + best]) best = c;
            correct += best == labels[start + i];
            seen++;
        }
    }
    printf("held-out accuracy: %.2f%% on %ld digits\n", 100.0 * correct / seen, seen);
    FILE *f = fopen(out, "wb");
    for (int p = 0; f && p < MLP_TRAIN_NUM_PARAMS; p++) {
        static float buffer[784 * 128];
        long sizes[] = {MLP_TRAIN_PARAM_0_SIZE, MLP_TRAIN_PARAM_1_SIZE, MLP_TRAIN_PARAM_2_SIZE,
                        MLP_TRAIN_PARAM_3_SIZE};
        if (mlp_train_get_param(state, p, buffer) || fwrite(buffer, sizeof(float), (size_t)sizes[p], f) !=
            (size_t)sizes[p]) { fclose(f); return 1; }
    }
    if (f) { fclose(f); printf("saved the weights to %s\n", out); }
    free(state); free(workspace); free(x); free(y); free(scores); free(images); free(labels);
    return 0;
}
