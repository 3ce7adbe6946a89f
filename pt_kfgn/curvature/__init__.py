"""Block Hessian and Gauss-Newton recursions, Kronecker factors, GN-vector products (Sec. 2-3, App. C)."""
