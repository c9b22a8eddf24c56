# Reference values for the paired AUROC comparison in tests/test_metrics_r.py, computed by pROC itself.
# Usage: Rscript roc_test.R name1=file1.csv ...   (columns y, s1 = new model's score, s2 = baseline's)
# Prints one JSON object keyed by name: roc.test(roc1, roc2, paired = TRUE, method = "delong").
suppressPackageStartupMessages({library(pROC); library(jsonlite)})

args <- commandArgs(trailingOnly = TRUE)
res <- list()
for (a in args) {
  kv <- strsplit(a, "=", fixed = TRUE)[[1]]
  d <- read.csv(kv[2])
  r1 <- roc(d$y, d$s1, levels = c(0, 1), direction = "<", quiet = TRUE)
  r2 <- roc(d$y, d$s2, levels = c(0, 1), direction = "<", quiet = TRUE)
  tt <- roc.test(r1, r2, method = "delong", paired = TRUE, conf.level = 0.95)
  res[[kv[1]]] <- list(auc1 = unname(tt$estimate[1]), auc2 = unname(tt$estimate[2]),
                       statistic = unname(tt$statistic), p_value = tt$p.value,
                       ci_low = tt$conf.int[1], ci_high = tt$conf.int[2])
}
cat(toJSON(res, auto_unbox = TRUE, digits = NA, na = "null"))
