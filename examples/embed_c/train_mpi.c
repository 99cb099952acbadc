/* Data-parallel training in C with MPI and the AOT bundle's split step: every rank
   computes gradients on its share of each global batch (mlp_train_train_grads), the
   ranks average them with MPI_Allreduce, and every rank applies the same update
   (mlp_train_train_apply), so all ranks hold the same weights. No Python.
       mpiexec -n 2 ./train_mpi t10k-images-idx3-ubyte t10k-labels-idx1-ubyte [EPOCHS] */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "idx.h"
#include "mlp_train.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, ranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    if (argc < 3) { fprintf(stderr, "usage: %s IMAGES LABELS [EPOCHS]\n", argv[0]); MPI_Abort(MPI_COMM_WORLD, 2); }
    float *images = NULL; int64_t *labels = NULL;
    long n = idx_read_images(argv[1], &images), m = idx_read_labels(argv[2], &labels);
    int epochs = argc > 3 ? atoi(argv[3]) : 3;
    if (n < 10000 || m != n) { fprintf(stderr, "cannot read the MNIST files\n"); MPI_Abort(MPI_COMM_WORLD, 2); }
    const long batch = MLP_TRAIN_BATCH, pixels = MLP_TRAIN_INPUT_SIZE / MLP_TRAIN_BATCH;
    void *state = aligned_buffer(MLP_TRAIN_STATE_SIZE), *workspace = aligned_buffer(MLP_TRAIN_WORKSPACE_SIZE);
    float *x = aligned_buffer(sizeof(float) * MLP_TRAIN_INPUT_SIZE);
    int64_t *y = aligned_buffer(sizeof(int64_t) * MLP_TRAIN_LABELS_SIZE);
    float *grads = aligned_buffer(sizeof(float) * MLP_TRAIN_GRADS_COUNT);
    float *scores = aligned_buffer(sizeof(float) * MLP_TRAIN_OUTPUT_SIZE);
    if (mlp_train_init_state(state)) MPI_Abort(MPI_COMM_WORLD, 1);   /* the same start everywhere */
    unsigned seed = 1;                     /* the same draws on every rank: each takes its rows */
    long steps = 8000 / (batch * ranks);
    for (int epoch = 0; epoch < epochs; epoch++) {
        double total = 0;
        for (long s = 0; s < steps; s++) {
            for (long i = 0; i < batch * ranks; i++) {
                seed = seed * 1103515245u + 12345u;
                long k = (seed >> 8) % 8000, row = i - rank * batch;
                if (row < 0 || row >= batch) continue;
                memcpy(x + row * pixels, images + k * pixels, sizeof(float) * pixels);
                y[row] = labels[k];
            }
            int code = mlp_train_train_grads(state, x, y, workspace, grads);
            if (code) { fprintf(stderr, "train_grads: %s\n", mlp_train_error_string(code)); MPI_Abort(MPI_COMM_WORLD, 1); }
            MPI_Allreduce(MPI_IN_PLACE, grads, MLP_TRAIN_GRADS_COUNT, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            for (long i = 0; i < MLP_TRAIN_GRADS_COUNT; i++) grads[i] /= (float)ranks;
            code = mlp_train_train_apply(state, grads, 1e-3f, workspace);
            if (code) { fprintf(stderr, "train_apply: %s\n", mlp_train_error_string(code)); MPI_Abort(MPI_COMM_WORLD, 1); }
            total += grads[MLP_TRAIN_GRADS_LOSS];
        }
        if (rank == 0) printf("epoch %d: mean loss %.4f (%d ranks x batch %ld)\n", epoch + 1, total / steps, ranks, batch);
    }
    long correct = 0, seen = 0;
    for (long start = 8000; rank == 0 && start + batch <= 10000; start += batch) {
        if (mlp_train_run(state, images + start * pixels, scores, workspace)) MPI_Abort(MPI_COMM_WORLD, 1);
        for (long i = 0; i < batch; i++) {
            long best = 0;
            for (long c = 1; c < MLP_TRAIN_NUM_CLASSES; c++)
                if (scores[i * MLP_TRAIN_NUM_CLASSES + c] > scores[i * MLP_TRAIN_NUM_CLASSES + best]) best = c;
            correct += best == labels[start + i];
            seen++;
        }
    }
    if (rank == 0) printf("held-out accuracy: %.2f%% on %ld digits\n", 100.0 * correct / seen, seen);
    free(state); free(workspace); free(x); free(y); free(grads); free(scores); free(images); free(labels);
    MPI_Finalize();
    return 0;
}
