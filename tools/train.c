/* train.c - kiln train: the training loop over a data set (lands with autodiff). */
#include "cli.h"

int cmd_train(Options *o) {
  return cli_usage_error(o->cmd, "training needs autodiff and the optimizer passes, not built yet");
}
