// The Python module mlguard._C. Importing it runs the static TORCH_LIBRARY registrations of
// the op files linked beside it (the ops then live under torch.ops.mlguard). No torch headers
// here, so this file compiles in a second.
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C",
                            "mlguard's compiled ops, registered under torch.ops.mlguard.", -1,
                            nullptr};
  return PyModule_Create(&def);
}
