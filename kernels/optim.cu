// optim.cu - fused optimizer steps: one launch updates one parameter tensor in place.
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
// elementwise ops. Scalars arrive already in T (the launcher converts), and the bias
// corrections c1, c2 are computed once on the host per step.
#include "common.cuh"

template <typename T>
__global__ void adam_update(T* p, T* m, T* v, const T* g, int n, T lr, T beta1, T beta2, T eps,
                            T weight_decay, int decoupled, T correction1, T correction2) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
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
__global__ void sgd_update(T* p, T* velocity, const T* g, int n, T lr, T momentum, int nesterov,
                           T weight_decay) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    T grad = g[i];
    if (weight_decay != T(0)) grad = grad + weight_decay * p[i];
    if (momentum != T(0)) {
        velocity[i] = velocity[i] * momentum + grad;
        grad = nesterov ? grad + momentum * velocity[i] : velocity[i];
    }
    p[i] -= lr * grad;
}
