# Reference values for tests/test_metrics_r.py, computed by R itself (rms, pROC, stats).
# Usage: Rscript conformance.R name1=file1.csv name2=file2.csv ...   (columns y, p, p2)
# Prints one JSON object keyed by name. Independent of the Python code under test.
suppressPackageStartupMessages({library(rms); library(pROC); library(jsonlite)})

reference <- function(d) {
  y <- d$y; p <- d$p; p2 <- d$p2
  out <- list()
  # rms::val.prob: slope (lrm.fit on logit), Eavg/E90/Emax (lowess iter=0), Spiegelhalter, Brier, C
  v <- val.prob(p, y, pl = FALSE)
  out$val_prob <- as.list(v[c("Slope", "Eavg", "E90", "Emax", "S:z", "S:p", "Brier", "C (ROC)", "Intercept")])
  # E50: the same errors as val.prob computes them
  sm <- lowess(p, y, iter = 0)
  er <- abs(p - approx(sm, xout = p, ties = mean)$y)
  out$e50 <- unname(quantile(er, 0.5))
  # calibration-in-the-large (offset) and slope, Wald intervals
  lp <- qlogis(p)
  f0 <- glm(y ~ 1 + offset(lp), family = binomial, control = glm.control(epsilon = 1e-14, maxit = 100))
  ci0 <- confint.default(f0)
  out$intercept <- list(estimate = unname(coef(f0)[1]), ci_low = ci0[1, 1], ci_high = ci0[1, 2],
                        se = unname(sqrt(vcov(f0)[1, 1])))
  f1 <- glm(y ~ lp, family = binomial, control = glm.control(epsilon = 1e-14, maxit = 100))
  ci1 <- confint.default(f1)
  out$slope <- list(estimate = unname(coef(f1)[2]), ci_low = ci1[2, 1], ci_high = ci1[2, 2],
                    intercept = unname(coef(f1)[1]))
  # pROC DeLong
  r1 <- roc(y, p, levels = c(0, 1), direction = "<", quiet = TRUE)
  r2 <- roc(y, p2, levels = c(0, 1), direction = "<", quiet = TRUE)
  ci <- ci.auc(r1, method = "delong", conf.level = 0.95)
  out$delong <- list(ci_low = ci[1], estimate = ci[2], ci_high = ci[3])
  ci90 <- ci.auc(r1, method = "delong", conf.level = 0.90)
  out$delong90 <- list(ci_low = ci90[1], estimate = ci90[2], ci_high = ci90[3])
  tt <- roc.test(r1, r2, method = "delong", paired = TRUE)
  out$roc_test <- list(statistic = unname(tt$statistic), p_value = tt$p.value,
                       auc1 = unname(tt$estimate[1]), auc2 = unname(tt$estimate[2]),
                       ci_low = if (is.null(tt$conf.int)) NA else tt$conf.int[1],
                       ci_high = if (is.null(tt$conf.int)) NA else tt$conf.int[2])
  # Hosmer-Lemeshow by hand: unique type-7 deciles, right-closed, lowest included, df = groups - 2
  br <- unique(quantile(p, probs = seq(0, 1, 0.1), type = 7))
  g <- cut(p, breaks = br, include.lowest = TRUE, right = TRUE)
  nn <- as.numeric(table(g)); o <- as.numeric(tapply(y, g, sum)); e <- as.numeric(tapply(p, g, sum))
  keep <- nn > 0; nn <- nn[keep]; o <- o[keep]; e <- e[keep]
  hl <- sum((o - e)^2 / e + ((nn - o) - (nn - e))^2 / (nn - e))
  out$hosmer_lemeshow <- list(statistic = hl, df = length(nn) - 2,
                              p_value = pchisq(hl, length(nn) - 2, lower.tail = FALSE))
  # ICI (Austin & Steyerberg 2019): loess defaults (span 0.75, degree 2, surface "interpolate")
  fl <- loess(y ~ p)
  out$ici <- mean(abs(fitted(fl) - p))
  # ECE by hand: 15 equal-width right-closed bins, 0 in the first
  b <- cut(p, breaks = seq(0, 1, length.out = 16), include.lowest = TRUE, right = TRUE)
  nb <- tapply(p, b, length); nb[is.na(nb)] <- 0
  gap <- abs(tapply(y, b, sum) - tapply(p, b, sum)); gap[is.na(gap)] <- 0
  out$ece <- sum(gap) / length(p)
  out
}

args <- commandArgs(trailingOnly = TRUE)
res <- list()
for (a in args) {
  kv <- strsplit(a, "=", fixed = TRUE)[[1]]
  d <- read.csv(kv[2])
  res[[kv[1]]] <- reference(d)
}
cat(toJSON(res, auto_unbox = TRUE, digits = NA, na = "null"))
