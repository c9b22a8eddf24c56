# Reference values for the random-effects synthesis in tests/test_synthesis_r.py, computed by metafor.
# Usage: Rscript synthesis.R sites.csv   (columns site, y, lp = the model's logit; one row per case)
# Per site: pROC's AUROC and DeLong variance (logit scale by the delta method), and the glm Wald fits of
# the calibration slope (y ~ lp) and calibration-in-the-large (y ~ offset(lp)); ln(O/E) with Debray et al.'s
# se sqrt((1 - O/n) / O). Then, for each metric and
# for metafor's dat.bcg (log relative risks by escalc), rma() with REML + knha, REML + z and DL + z, and
# predict(). The prediction interval is also given with t_{k-2} (Higgins et al. 2009) from metafor's
# tau2 and se, since metafor 3.8's predict() uses t_{k-1} under knha.
# Prints one JSON object.
suppressPackageStartupMessages({library(metafor); library(pROC); library(jsonlite)})

args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], colClasses = c(site = "character"))
inputs <- list()
for (s in unique(d$site)) {
  x <- d[d$site == s, ]
  r <- roc(x$y, x$lp, levels = c(0, 1), direction = "<", quiet = TRUE)
  auc <- as.numeric(auc(r))
  slope <- summary(glm(y ~ lp, family = binomial, data = x, control = glm.control(epsilon = 1e-14, maxit = 100)))$coefficients["lp", ]
  cil <- summary(glm(y ~ 1 + offset(lp), family = binomial, data = x, control = glm.control(epsilon = 1e-14, maxit = 100)))$coefficients["(Intercept)", ]
  o <- sum(x$y)
  e <- sum(plogis(x$lp))
  inputs[[s]] <- data.frame(site = s,
    oe_ratio_yi = log(o / e), oe_ratio_sei = sqrt((1 - o / nrow(x)) / o),
    auroc_yi = qlogis(auc), auroc_sei = sqrt(var(r, method = "delong")) / (auc * (1 - auc)),
    calibration_slope_yi = slope[["Estimate"]], calibration_slope_sei = slope[["Std. Error"]],
    calibration_intercept_yi = cil[["Estimate"]], calibration_intercept_sei = cil[["Std. Error"]])
}
inputs <- do.call(rbind, inputs)

fit <- function(yi, sei, method, test) {
  r <- rma(yi = yi, sei = sei, method = method, test = test, control = list(threshold = 1e-12, maxiter = 1000))
  p <- predict(r)
  k <- length(yi)
  half <- if (k >= 3) qt(0.975, k - 2) * sqrt(r$tau2 + p$se^2) else NA
  list(estimate = p$pred, se = p$se, ci_low = p$ci.lb, ci_high = p$ci.ub,
       pi_low_metafor = p$pi.lb, pi_high_metafor = p$pi.ub,
       pi_low = p$pred - half, pi_high = p$pred + half,
       tau2 = r$tau2, i2 = r$I2 / 100, q = r$QE, q_p_value = r$QEp, k = k)
}
designs <- list(REML_hksj = c("REML", "knha"), REML_z = c("REML", "z"), DL_z = c("DL", "z"), DL_hksj = c("DL", "knha"))
out <- list(inputs = inputs, heart = list(), bcg = list())
for (m in c("auroc", "calibration_slope", "calibration_intercept", "oe_ratio")) {
  out$heart[[m]] <- lapply(designs, function(dz) fit(inputs[[paste0(m, "_yi")]], inputs[[paste0(m, "_sei")]], dz[1], dz[2]))
}
bcg <- escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
out$bcg_data <- list(yi = as.numeric(bcg$yi), sei = sqrt(as.numeric(bcg$vi)))
out$bcg <- lapply(designs, function(dz) fit(as.numeric(bcg$yi), sqrt(as.numeric(bcg$vi)), dz[1], dz[2]))
cat(toJSON(out, auto_unbox = TRUE, digits = NA, na = "null"))
