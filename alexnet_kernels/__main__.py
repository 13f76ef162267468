"""`python -m alexnet_kernels`: print build_info()."""
import alexnet_kernels


def main():
    info = alexnet_kernels.build_info()
    ops = info.pop("ops")
    triton_ops = info.pop("triton_ops")
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    w = max(map(len, ops))
    print(f"\n{'op':<{w}}  CPU   CUDA")
    for name, devs in ops.items():
        print(f"{name:<{w}}  {'yes' if devs['cpu'] else 'no':<5} {'yes' if devs['cuda'] else 'no'}")
    print(f"{'Triton ops:':<{w}}  {', '.join(triton_ops)}")


if __name__ == "__main__":
    main()
