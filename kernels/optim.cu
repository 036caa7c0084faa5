// optim.cu - fused optimizer steps, per tensor (version 1) and for all tensors at once (version 2).
//
// Maths (g = grad, p = param; numpy_ref.adam_update / sgd_update are the specification):
//   Adam  g += wd * p                      (L2, when weight_decay and not decoupled)
//         m = beta1 * m + (1 - beta1) * g,  v = beta2 * v + (1 - beta2) * g^2
//         p -= lr * wd * p                 (AdamW, when decoupled)
//         p -= lr * (m / c1) / (sqrt(v / c2) + eps),  c1 = 1 - beta1^t, c2 = 1 - beta2^t
//   SGD   g += wd * p;  with momentum: v = momentum * v + g and g = v (or g + momentum * v,
//         Nesterov);  p -= lr * g
//
// Thread layout: one thread per element; it reads p, g, m, v once and writes them back, so a
// step costs one pass over the optimizer state instead of the ~10 passes of separate
// elementwise ops. The element rules (adam_element, sgd_element) are shared by both versions,
// so the multi-tensor step gives the same bits as the per-tensor one.
//
// Version 1 (adam_update, sgd_update): one launch per parameter tensor; the scalars arrive as
// kernel arguments in T, the bias corrections computed on the host.
// Version 2 (adam_update_multi, sgd_update_multi): one launch for every tensor. The tensors'
// addresses come from pointer tables in device memory (uint64 arrays, cast back to T*), and
// block b works on tensor k where first_block[k] <= b < first_block[k + 1], elements
// (b - first_block[k]) * MULTI_CHUNK ... of it. The per-step scalars (step, lr, corrections)
// live in a small device array `schedule` that optim_advance<<<1, 1>>> moves to the next step,
// so a captured CUDA graph replays steps without any host-to-device copy. A vgg_like step thus
// spends 2 launches on Adam instead of one per parameter tensor (36).
// Version 3 (adam_update_advance_multi): optim_advance folded into the update, 1 launch per
// Adam step. Every block computes the new step's corrections from the schedule's old step
// itself; the last block to finish writes the new step back (see the kernel).
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void adam_element(T* p, T* m, T* v, const T* g, int i, T lr, T beta1,
                                             T beta2, T eps, T weight_decay, int decoupled,
                                             T correction1, T correction2) {
    T grad = g[i];
    if (weight_decay != T(0) && !decoupled) grad = grad + weight_decay * p[i];
    m[i] = m[i] * beta1 + (T(1) - beta1) * grad;
    v[i] = v[i] * beta2 + (T(1) - beta2) * grad * grad;
    T param = p[i];
    if (weight_decay != T(0) && decoupled) param -= lr * weight_decay * param;
    p[i] = param - lr * (m[i] / correction1) / (dev_sqrt(v[i] / correction2) + eps);
}

// velocity is only touched when momentum != 0 (the launcher may pass p in its place then).
template <typename T>
__device__ __forceinline__ void sgd_element(T* p, T* velocity, const T* g, int i, T lr,
                                            T momentum, int nesterov, T weight_decay) {
    T grad = g[i];
    if (weight_decay != T(0)) grad = grad + weight_decay * p[i];
    if (momentum != T(0)) {
        velocity[i] = velocity[i] * momentum + grad;
        grad = nesterov ? grad + momentum * velocity[i] : velocity[i];
    }
    p[i] -= lr * grad;
}

template <typename T>
__global__ void adam_update(T* p, T* m, T* v, const T* g, int n, T lr, T beta1, T beta2, T eps,
                            T weight_decay, int decoupled, T correction1, T correction2) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        adam_element(p, m, v, g, i, lr, beta1, beta2, eps, weight_decay, decoupled, correction1,
                     correction2);
}

template <typename T>
__global__ void sgd_update(T* p, T* velocity, const T* g, int n, T lr, T momentum, int nesterov,
                           T weight_decay) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) sgd_element(p, velocity, g, i, lr, momentum, nesterov, weight_decay);
}

// ---- Version 2: every tensor in one launch.

constexpr int MULTI_CHUNK = 1024;  // elements per block (4 per thread of a 256-thread block)

// The schedule array (float64): what the multi-tensor kernels read for the current step.
enum Schedule { SCHEDULE_STEP, SCHEDULE_LR, SCHEDULE_CORRECTION1, SCHEDULE_CORRECTION2 };

// The step after the schedule's and its bias corrections (1 - beta^t, in double as the host
// computes them).
struct AdamStep {
    double step, correction1, correction2;
};

__device__ inline AdamStep next_adam_step(const double* schedule, double beta1, double beta2) {
    const double step = schedule[SCHEDULE_STEP] + 1.0;
    return {step, 1.0 - pow(beta1, step), 1.0 - pow(beta2, step)};
}

__device__ inline void store_adam_step(double* schedule, AdamStep next) {
    schedule[SCHEDULE_STEP] = next.step;
    schedule[SCHEDULE_CORRECTION1] = next.correction1;
    schedule[SCHEDULE_CORRECTION2] = next.correction2;
}

// schedule[STEP] += 1 and the bias corrections of the new step. One thread.
__global__ void optim_advance(double* schedule, double beta1, double beta2) {
    store_adam_step(schedule, next_adam_step(schedule, beta1, beta2));
}

// The tensor block b works on: the k with first_block[k] <= b < first_block[k + 1] (binary
// search over the tensors + 1 prefix counts).
__device__ __forceinline__ int tensor_of_block(const int* first_block, int tensors, int b) {
    int low = 0, high = tensors - 1;
    while (low < high) {
        const int mid = (low + high + 1) / 2;
        if (first_block[mid] <= b) low = mid;
        else high = mid - 1;
    }
    return low;
}

// Calls element(k, i) for the elements of tensor k this block owns.
template <typename Element>
__device__ __forceinline__ void for_block_elements(const int* sizes, const int* first_block,
                                                   int tensors, Element element) {
    const int b = blockIdx.x, k = tensor_of_block(first_block, tensors, b);
    const int begin = (b - first_block[k]) * MULTI_CHUNK;
    const int end = min(begin + MULTI_CHUNK, sizes[k]);
    for (int i = begin + threadIdx.x; i < end; i += blockDim.x) element(k, i);
}

template <typename T>
__device__ __forceinline__ T* entry(const unsigned long long* table, int k) {
    return reinterpret_cast<T*>(table[k]);
}

// params, exp_avgs, exp_avg_sqs, grads: tables of `tensors` addresses; sizes: elements of each;
// first_block: tensors + 1 prefix counts of blocks. Grid (first_block[tensors],), 256 threads.
template <typename T>
__global__ void adam_update_multi(const unsigned long long* params,
                                  const unsigned long long* exp_avgs,
                                  const unsigned long long* exp_avg_sqs,
                                  const unsigned long long* grads, const int* sizes,
                                  const int* first_block, int tensors, const double* schedule,
                                  T beta1, T beta2, T eps, T weight_decay, int decoupled) {
    const T lr = T(schedule[SCHEDULE_LR]), correction1 = T(schedule[SCHEDULE_CORRECTION1]),
            correction2 = T(schedule[SCHEDULE_CORRECTION2]);
    for_block_elements(sizes, first_block, tensors, [&](int k, int i) {
        adam_element(entry<T>(params, k), entry<T>(exp_avgs, k), entry<T>(exp_avg_sqs, k),
                     entry<const T>(grads, k), i, lr, beta1, beta2, eps, weight_decay, decoupled,
                     correction1, correction2);
    });
}

// As adam_update_multi; velocities may be the params table when momentum == 0.
template <typename T>
__global__ void sgd_update_multi(const unsigned long long* params,
                                 const unsigned long long* velocities,
                                 const unsigned long long* grads, const int* sizes,
                                 const int* first_block, int tensors, const double* schedule,
                                 T momentum, int nesterov, T weight_decay) {
    const T lr = T(schedule[SCHEDULE_LR]);
    for_block_elements(sizes, first_block, tensors, [&](int k, int i) {
        sgd_element(entry<T>(params, k), entry<T>(velocities, k), entry<const T>(grads, k), i, lr,
                    momentum, nesterov, weight_decay);
    });
}

// ---- Version 3: Adam's advance and update in one launch.
//
// Block 0's update must not see the new step before block 1 has read the old one, so no block
// writes the schedule until every block has read it: thread 0 of each block reads the old step
// into shared memory, the block updates its elements, then thread 0 counts the block in with
// an integer atomicAdd on arrivals[0] (reduce.cu's channel_reduce counts its blocks alike); the
// last block to arrive has seen every other block read, so it alone stores the new step and
// resets the counter for the next launch. Each block computes the corrections with the same
// double maths as optim_advance and casts them to T as version 2 does: the same bits.
// arrivals: one zeroed uint32 owned by the launcher. Grid and tables as adam_update_multi;
// 256 threads. The bounds keep version 2's occupancy (float: 32 registers, 8 blocks per SM,
// no spills; double: 6 blocks, ptxas spills a few bytes): thread 0's pow()s would otherwise
// take the float kernel to 38 registers and 6 blocks per SM.
template <typename T>
__global__ void __launch_bounds__(256, sizeof(T) == 4 ? 8 : 6)
adam_update_advance_multi(const unsigned long long* params, const unsigned long long* exp_avgs,
                          const unsigned long long* exp_avg_sqs, const unsigned long long* grads,
                          const int* sizes, const int* first_block, int tensors, double* schedule,
                          unsigned* arrivals, T eps, T weight_decay, int decoupled, double beta1,
                          double beta2) {
    __shared__ AdamStep next;
    if (threadIdx.x == 0) next = next_adam_step(schedule, beta1, beta2);
    __syncthreads();
    const T lr = T(schedule[SCHEDULE_LR]), correction1 = T(next.correction1),
            correction2 = T(next.correction2);
    for_block_elements(sizes, first_block, tensors, [&](int k, int i) {
        adam_element(entry<T>(params, k), entry<T>(exp_avgs, k), entry<T>(exp_avg_sqs, k),
                     entry<const T>(grads, k), i, lr, T(beta1), T(beta2), eps, weight_decay,
                     decoupled, correction1, correction2);
    });
    if (threadIdx.x != 0) return;  // the other threads read no more of the schedule
    __threadfence();  // this block's read of the old step comes before it counts itself in
    if (atomicAdd(arrivals, 1u) != gridDim.x - 1) return;
    store_adam_step(schedule, next);
    arrivals[0] = 0;
}
